/* Structures shared by the proxy's files (conn.c, upstream.c, proxy.c).
 * Not for other modules: they use proxy.h. */
#pragma once

#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/queue.h>

#include "audit/audit.h"
#include "common/buf.h"
#include "common/secret.h"
#include "policy/policy.h"
#include "proxy/http1.h"
#include "proxy/mailbox.h"
#include "proxy/proxy.h"
#include "proxy/ratelimit.h"
#include "proxy/redact.h"
#include "proxy/sockread.h"
#include "proxy/tlsread.h"
#include "proxy/tls.h"
#include "proxy/token.h"
#include "secrets/source.h"

/* Flow control: stop reading one side when the other's output holds this
 * much, resume when it drains below LOW. Bounds memory per connection. */
#define WATER_HIGH               (256 * 1024)
#define WATER_LOW                (64 * 1024)
#define POOL_MAX_PER_WORKER      256
#define POOL_IDLE_SECONDS        30
#define UPSTREAM_CONNECT_SECONDS 10
#define MAX_ADDRS                8
/* A response head as keyward re-writes it for the client: the upstream's
 * head is at most max_header_bytes (1 MiB at most), and redaction may
 * lengthen it (a placeholder longer than the secret it replaces). */
#define HEAD_OUT_MAX   (16 * 1024 * 1024)
#define HEAD_KEEP      (64 * 1024) /* larger buffers are freed after use */
#define HEAD_TOO_LARGE "sent a response head too large to re-write"

/* A parsed policy shared by the generations built from it: a rotation
 * builds a new generation with new secrets and the same policy. */
struct policy_share {
	atomic_int refs;
	struct policy *policy;
	/* per credential, the folder its file: source is read from, opened
	 * when the policy was loaded (source.h) */
	struct source_pin *pins;
	/* Never reused (share_new counts up): a pooled upstream connection is
	 * reused only under the policy it was dialled under (upstream.c). */
	uint64_t serial;
	/* Upstream TLS contexts, built on first use (gen_upstream_ctx): the
	 * system roots can take tens of milliseconds to load, which would
	 * otherwise delay every start and reload, and a `keyward run` that
	 * makes no HTTPS request does not need them. They depend on the
	 * policy only, so a rotation keeps them. */
	pthread_mutex_t ctx_lock;
	atomic_bool ctx_built; /* set once, after the contexts are in place */
	SSL_CTX *client_ctx;   /* system roots + policy upstream_ca */
	SSL_CTX **route_ctx;   /* per route with its own upstream_ca, else NULL */
	/* per credential, the digests of a minted one's definition (token.h),
	 * made once here rather than at every request that carries a token */
	struct token_def *mint_defs;
};

/* One loaded configuration: policy, secrets, TLS contexts. Requests hold a
 * reference for their whole life, so a reload or a rotation never changes a
 * request half-way. */
struct gen {
	atomic_int refs;
	struct policy_share *share;
	struct policy *policy;   /* share->policy */
	struct secret **secrets; /* per credential, NULL if its source failed */
	char **secret_errors;    /* per credential, why it failed */
	/* per credential, its source as it was just before the secret was read;
	 * read and written by the main thread only (rotate_check in proxy.c) */
	struct source_stamp *stamps;
	/* Every secret of the generation in the forms a response may carry it
	 * in, each mapped to its placeholder (redact.h); built on the first
	 * response of a credentialed route (gen_redact_set), under redact_lock. */
	pthread_mutex_t redact_lock;
	atomic_bool redact_built;
	struct redact_set *redact;
};

struct gen *gen_ref(struct gen *g);
void gen_unref(struct gen *g);
/* The upstream TLS context for route `ri` of g, built on first use; NULL
 * (reason in errbuf) if it cannot be built. */
SSL_CTX *gen_upstream_ctx(struct gen *g, size_t ri, char *errbuf, size_t errlen);
/* g's redaction set, built on first use (response.c); NULL when out of
 * memory. Read-only once returned: shared by the workers. */
const struct redact_set *gen_redact_set(struct gen *g);

struct listener_info {
	char name[300]; /* for audit records: "127.0.0.1:8080", "unix:/path" */
	int fd;
	bool is_unix;
	bool shared;    /* one socket for all workers (unix, or the sandbox's door) */
	dev_t sock_dev; /* unix: the socket file keyward made, removed at exit */
	ino_t sock_ino; /* only while it is still that file */
};

struct conn;
struct upstream;

struct worker {
	struct proxy *px;
	int id;
	struct event_base *base;
	struct evdns_base *dns;
	pthread_t thread;
	struct evconnlistener **listeners;
	size_t n_listeners;
	struct event *accept_pause; /* re-enables the listeners after EMFILE */
	TAILQ_HEAD(, conn) conns;
	unsigned n_conns;
	TAILQ_HEAD(, upstream) idle;
	unsigned n_idle;
	bool draining;
	/* conn.c: the audit records of this worker's requests, written once
	 * per pass of its event loop ("audit" in conn.c) */
	struct audit_batch *audit_batch;
	struct event *audit_ev;       /* runs that write; made on first use */
	bool audit_scheduled;         /* a write is due at the end of this pass */
	LIST_HEAD(, conn) audit_wait; /* allowed requests waiting for that write */
	/* conn.c: a response head being re-written for the client, and the
	 * same redacted; reused from head to head */
	struct buf head_out;
	struct buf head_red;
	/* proxy.c: the current generation as this worker last saw it */
	struct gen *gen;
	unsigned gen_version;
	/* proxy.c: how other threads reach this worker (mailbox.h); the
	 * stop letter and its drain period, set before it is posted */
	struct mailbox mail;
	struct letter stop_letter;
	unsigned stop_grace_ms;
};

struct resolve_pin {
	char host[256];
	struct sockaddr_storage addr; /* port 0 */
	socklen_t len;
};

struct proxy {
	struct proxy_options opt;
	pthread_mutex_t gen_lock;
	struct gen *gen;
	atomic_uint gen_version; /* moves on every reload */
	struct tls_ca *ca;
	SSL_CTX *server_ctx; /* proxy_server_ctx(): made at the first tunnel */
	atomic_bool server_ctx_built;
	pthread_mutex_t server_ctx_lock;
	struct audit_log *audit;
	struct listener_info *listeners;
	size_t n_listeners;
	struct worker *workers;
	int n_workers;
	struct resolve_pin *pins;
	size_t n_pins;
	atomic_int active; /* connections open, all workers */
	struct event_base *main_base;
	struct event *rotate_timer;  /* main base: looks for rotated secrets */
	struct rotate_job *rotating; /* proxy.c: secrets being re-read, or NULL */
	struct rate_table *rates;    /* token buckets of rate: limits, kept across reloads */
	struct tokens *tokens;       /* minted access tokens (token.h) */
	struct event *notice_ev;     /* main base: opt.child_notice */
	bool child_ending;           /* it fired: wait for the child last */
};

struct gen *proxy_current_gen(struct proxy *px);
/* The TLS server context of the tunnels, made (with the CA's leaf key) at
 * the first call; NULL if that failed, and the next call tries again. */
SSL_CTX *proxy_server_ctx(struct proxy *px);
/* The current generation as worker w sees it, without taking gen_lock on
 * every request: w keeps a reference, refreshed only when a reload has
 * moved gen_version since it last looked. Borrowed: valid until w's next
 * call; gen_ref it to keep it longer. Call from w's thread only. */
struct gen *worker_current_gen(struct worker *w);

/* conn.c */
void conn_accept(struct worker *w, const struct listener_info *li, int fd, const struct sockaddr *sa, int salen);
void conn_drain_worker(struct worker *w);
/* The end of the drain period: every connection still open is closed, its
 * request in the middle audited as cut short (reason "stop"), and the
 * worker's last audit records written. */
void conn_close_worker(struct worker *w);

/* upstream.c: dialing, DNS, pool */
struct upstream_target {
	enum scheme scheme;
	const char *host; /* name or IP literal (no brackets) */
	uint16_t port;
	bool allow_private;
	SSL_CTX *ctx;           /* for https, one of the policy's (gen_upstream_ctx) */
	uint64_t policy_serial; /* policy_share.serial of the request's gen */
	size_t listener;        /* index of the client's listener in px->listeners */
	bool fresh;             /* skip the pool */
};

/* Called once when the upstream is connected (err 0) or could not be
 * reached (err < 0 and a reason for people in why). */
typedef void (*upstream_ready_fn)(struct conn *c, struct upstream *u, int err, const char *why);

struct upstream {
	TAILQ_ENTRY(upstream) link;
	struct worker *w;
	struct bufferevent *bev;
	struct sockread rd;        /* its reading once connected (sockread.h, tlsread.h) */
	struct timeval wr_timeout; /* bev's write timeout, as upstream_timeouts last set it */
	struct conn *conn;
	char key[400];
	upstream_ready_fn ready;
	struct event *kick;
	/* dialing */
	struct evdns_getaddrinfo_request *dns_req;
	struct sockaddr_storage addrs[MAX_ADDRS];
	socklen_t addr_lens[MAX_ADDRS];
	int n_addrs, next_addr;
	char host[256];
	uint16_t port;
	bool tls;
	bool allow_private;
	SSL_CTX *ctx;
	uint64_t policy_serial; /* the policy it was dialled under */
	bool connected;
	bool reused; /* came from the pool: may have been closed meanwhile */
	bool unsure; /* framed a body its status forbids (conn.c): never pooled */
	bool shut;   /* keyward's sending is over (upstream_shutdown_write): never pooled */
	char why[256];
	char peer[64];
	/* response parsing, owned by conn.c while in use */
	struct http1 parser;
	struct buf head;
	size_t head_scan;
	struct http_header *hdrs;
	unsigned max_headers;
	struct http_head resp;
	int state;
};

/* Starts getting a connection for c: from the pool, or by dialing.
 * Returns 1 with a pooled connection in *ret, ready now: ready is not
 * called, the caller goes on with it. Returns 0 when it dials: ready
 * runs later (never from within this call). Returns a negative errno if
 * nothing could be started (reason in why). */
int upstream_get(struct worker *w, struct conn *c, const struct upstream_target *t, upstream_ready_fn ready,
                 struct upstream **ret, char *why, size_t whylen) WUR;
/* Turns reading from u on or off: its sockread (plain or TLS), else its
 * TLS bufferevent's own reading. */
void upstream_read(struct upstream *u, bool on);
/* Sets the timeouts of u's reading and writing (NULL: none). */
void upstream_timeouts(struct upstream *u, const struct timeval *rd, const struct timeval *wr);
/* Ends keyward's sending on u, whose output buffer must be empty (what it
 * holds would be cut off), and leaves its reading as it is: after a 101,
 * the client's end passed on to the upstream, which may still answer. */
void upstream_shutdown_write(struct upstream *u);
/* Returns u to the pool when reusable and dialled under the current
 * policy, else closes it. */
void upstream_release(struct upstream *u, bool reusable);
/* Wipes the response head u read last (an upstream may reflect a secret
 * in it: an echoed Authorization header) and empties its buffer. */
void upstream_head_clear(struct upstream *u);
void upstream_pool_clear(struct worker *w);
/* Closes the idle connections dialled under a policy other than the one of
 * serial `current` (a reload replaced it). */
void upstream_pool_drop_stale(struct worker *w, uint64_t current);
