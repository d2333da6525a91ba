/* The policy: what the sandbox may reach, and with which credential.
 *
 * Loaded from YAML (version 1, see docs/policy.md). Everything here is pure
 * data and pure functions: no I/O beyond reading the policy file, no
 * secrets (a credential names where its secret comes from; src/secrets
 * fetches it). A loaded policy is immutable and may be shared by threads. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

/* The longest command of a from: exec: source. */
#define POLICY_EXEC_MAX 4096

enum cred_source {
	SOURCE_ENV,   /* from: env:VAR   (keyward's own environment) */
	SOURCE_FILE,  /* from: file:PATH */
	SOURCE_VAULT, /* from: vault:NAME (keyward's encrypted vault, docs/vault.md) */
	SOURCE_EXEC,  /* from: exec:COMMAND (its stdout, secrets/exec.h) */
	SOURCE_PARTS, /* a credential of several parts (kind: aws, oauth2_*...):
	                 no secret of its own, its parts have the sources */
};

/* What a credential is. A `secret` is one value from one source; the other
 * kinds are made of parts, each with its own from:/env:/placeholder: (see
 * docs/policy.md), and keyward uses them to sign requests (aws) or to mint
 * the value it attaches (oauth2_*, github_app). */
enum cred_kind {
	CRED_SECRET,
	CRED_AWS,
	CRED_OAUTH2_CLIENT,  /* kind: oauth2_client_credentials */
	CRED_OAUTH2_REFRESH, /* kind: oauth2_refresh */
	CRED_GITHUB_APP,
};

/* The parts of each kind, as indexes into policy_credential.parts. */
enum {
	AWS_ACCESS_KEY_ID = 0,
	AWS_SECRET_ACCESS_KEY = 1,
	AWS_SESSION_TOKEN = 2, /* optional */
};
enum {
	OAUTH_CLIENT_ID = 0,     /* client_credentials: required; refresh: optional */
	OAUTH_CLIENT_SECRET = 1, /* client_credentials: required; refresh: optional */
	OAUTH_REFRESH_TOKEN = 2, /* refresh: required */
};
enum {
	GITHUB_APP_PRIVATE_KEY = 0,
};
#define CRED_MAX_PARTS 3

/* How keyward mints the token of a kind oauth2_client_credentials,
 * oauth2_refresh or github_app (docs/policy.md): the non-secret keys. */
struct policy_mint {
	char *url;             /* the token endpoint: token_url:, or api_url +
	                          /app/installations/ID/access_tokens */
	char *host;            /* of url: lower case, no brackets */
	uint16_t port;         /* of url (443 unless given) */
	char *path;            /* of url: path and query, starts with '/' */
	char **scopes;         /* oauth2: NULL-terminated, or NULL */
	char *audience;        /* oauth2_client_credentials: or NULL */
	bool client_auth_post; /* client_auth: post (id and secret in the body) */
	char *upstream_ca;     /* PEM file of extra CAs for the endpoint, or NULL */
	char *upstream_ca_pem; /* its contents, once read (proxy_read_cas), or NULL */
	size_t upstream_ca_len;
	bool allow_private;    /* the endpoint may be a loopback/private address */
	char *app_id;          /* github_app */
	char *installation_id; /* github_app: decimal */
	char **repositories;   /* github_app: names, NULL-terminated, or NULL */
	char **permissions;    /* github_app: name, level, name, level..., NULL; or NULL */
};

/* "secret", "aws", "oauth2_client_credentials"...: the kind: of the policy. */
const char *policy_kind_name(enum cred_kind k);

/* "env", "file", "vault": the prefix of from: for this source. */
const char *policy_source_name(enum cred_source s);

/* Rate and time limits of a route or a credential (rate:, burst:, hours:,
 * timezone:; docs/policy.md "Rate and time limits"). */
#define POLICY_MAX_WINDOWS 32
struct policy_window {
	uint8_t days;        /* bit 0 Monday ... bit 6 Sunday */
	uint16_t start, end; /* minutes after midnight; start < end <= 1440 */
};
struct policy_quota {
	uint64_t rate_count;    /* requests per rate_period_s; 0: no rate limit */
	uint64_t rate_period_s; /* 1, 60 or 3600 */
	uint64_t burst;         /* bucket size; rate_count unless burst: says */
	bool has_hours;         /* hours: given; an empty list is never open */
	struct policy_window windows[POLICY_MAX_WINDOWS];
	size_t n_windows;
	int tz_offset_min; /* timezone: UTC (0) or a fixed offset +HH:MM / -HH:MM */
};

/* Whether the time windows of q are open at `now` (UNIX time). When they
 * are closed, *ret_wait_s is the number of seconds until they next open,
 * or 0 if they never do. (hours.c) */
bool policy_hours_open(const struct policy_quota *q, int64_t now, uint64_t *ret_wait_s);

/* Every credential and every part of one is an entry of policy.creds: a
 * part follows its credential, is named "CREDENTIAL.PART" (s3.access_key_id)
 * and has a source, an env: and a placeholder like a secret credential, so
 * that loading, rotation, the sandbox's environment and the leak check treat
 * it as one. Routes name only whole credentials (parent NULL). */
struct policy_credential {
	char *name; /* the key under credentials:; [A-Za-z0-9_.-]+ */
	enum cred_kind kind;
	const struct policy_credential *parent;          /* a part: its credential; else NULL */
	struct policy_credential *parts[CRED_MAX_PARTS]; /* kind != secret: its parts, NULL where absent */
	struct policy_mint *mint;                        /* a kind whose token keyward mints; else NULL */
	enum cred_source source;
	char *source_arg;  /* VAR, PATH, NAME or COMMAND */
	char *env;         /* sandbox variable holding the placeholder, or NULL */
	char *placeholder; /* always set: configured, or derived from the name */
	int line, column;
	struct policy_quota quota; /* rate:, hours: of the credential, for all its routes */
};

/* Whether a request to a route bound to `bound` may carry c's placeholder:
 * c is that credential or one of its parts. */
static inline bool policy_credential_covers(const struct policy_credential *bound, const struct policy_credential *c)
{
	return bound && (c == bound || c->parent == bound);
}

enum inject_mode {
	INJECT_NONE,   /* route has no credential */
	INJECT_BEARER, /* Authorization: Bearer SECRET */
	INJECT_BASIC,  /* Authorization: Basic base64(USER:SECRET) */
	INJECT_HEADER, /* NAME: TEMPLATE with {secret} replaced */
	INJECT_QUERY,  /* ?PARAM=SECRET */
	INJECT_SWAP,   /* only swap placeholders where the client put them */
	INJECT_SIGV4,  /* kind aws: check the placeholder key id, re-sign with the real key */
};

enum scheme { SCHEME_HTTPS, SCHEME_HTTP };

struct policy_route {
	size_t index;                         /* 0-based position in routes: */
	int line, column;                     /* where the route starts */
	char *host;                           /* lower case, no trailing dot; for a wildcard
	                            the suffix including the dot: ".example.com" */
	bool wildcard;                        /* host was "*.example.com" */
	uint16_t port;                        /* 0: the scheme's default (443 / 80) */
	enum scheme scheme;                   /* https unless the route says scheme: http */
	char **methods;                       /* upper case; NULL-terminated; NULL = all */
	char **paths;                         /* globs; NULL-terminated; NULL = all */
	struct policy_credential *credential; /* borrowed from the policy; or NULL */
	enum inject_mode inject;
	char *inject_user;     /* INJECT_BASIC: user name, NULL = keep client's */
	char *inject_header;   /* INJECT_HEADER: header name */
	char *inject_value;    /* INJECT_HEADER: template containing {secret} */
	char *inject_query;    /* INJECT_QUERY: parameter name */
	char *upstream_ca;     /* PEM file of extra trusted CAs, or NULL */
	char *upstream_ca_pem; /* its contents, once read (proxy_read_cas), or NULL */
	size_t upstream_ca_len;
	uint64_t max_body;         /* request body ceiling in bytes; 0 = policy's */
	bool allow_private;        /* host names a loopback/private address or
	                            `allow_private: true`: dialing such an
	                            address is allowed for this route */
	bool refuse_compressed;    /* compressed: refuse (default decode): a compressed
	                            response on this credentialed route gets 502 */
	struct policy_quota quota; /* rate:, burst:, hours:, timezone: */
};

struct policy_limits {
	size_t max_header_bytes;      /* request/response head, default 64 KiB */
	unsigned max_headers;         /* default 100 */
	unsigned header_timeout_ms;   /* whole head must arrive, default 10 s */
	unsigned idle_timeout_ms;     /* keep-alive idle, default 60 s */
	unsigned upstream_timeout_ms; /* upstream silent while a request uses it, default 300 s */
	uint64_t max_body;            /* default request body ceiling, 0 = none */
	unsigned drain_timeout_ms;    /* keyward proxy's stop: time for requests in flight, default 30 s */
	uint64_t max_decoded_body;    /* decoded size of a compressed response on a
	                                 credentialed route, default 1 GiB */
};

/* sandbox: (used by `keyward run`; `keyward proxy` ignores it) */
struct policy_sandbox_path {
	char *path; /* absolute after policy_load (relative ones resolve against the policy's folder) */
	bool write;
	int line, column;
};

#define SANDBOX_MAX_PATHS 64
#define SANDBOX_MAX_ENV   64
#define SANDBOX_MAX_PORTS 32

struct policy_sandbox {
	char *workspace;                   /* NULL: the caller's choice (--workspace, else the current directory) */
	struct policy_sandbox_path *paths; /* read_only: then read_write: entries */
	size_t n_paths;
	char **env;                        /* names taken from the caller's environment; NULL-terminated or NULL */
	uint16_t ports[SANDBOX_MAX_PORTS]; /* loopback TCP ports the sandbox may use among its own processes */
	size_t n_ports;
	bool require_landlock; /* landlock: required */
	/* limits: 0 = keyward's default (see docs/policy.md) */
	uint64_t memory;      /* bytes, cgroup */
	uint64_t pids;        /* cgroup pids.max */
	uint64_t cpu_percent; /* cgroup CPU quota, 100 = one core */
	uint64_t processes;   /* RLIMIT_NPROC */
	uint64_t open_files;  /* RLIMIT_NOFILE */
	uint64_t file_size;   /* RLIMIT_FSIZE, bytes */
	uint64_t tmp_size;    /* size of the /tmp and $HOME tmpfs, bytes */
};

struct policy {
	char *path;                      /* file it was loaded from */
	struct policy_credential *creds; /* n_creds entries */
	size_t n_creds;
	struct policy_route *routes; /* n_routes entries, in file order */
	size_t n_routes;
	char *audit;           /* audit: path, or NULL */
	char *upstream_ca;     /* top-level upstream_ca:, or NULL */
	char *upstream_ca_pem; /* its contents, once read (proxy_read_cas), or NULL */
	size_t upstream_ca_len;
	struct policy_limits limits;
	struct policy_sandbox sandbox;
};

/* An error with its place in the file. message is complete and ready to
 * print: "policy.yaml:12:7: unknown inject mode \"bearr\"". */
struct policy_error {
	char message[512];
};

/* Loads and validates a policy file. Returns 0 and a new policy in *ret
 * (free with policy_free), or a negative errno and err filled in. */
int policy_load(const char *path, struct policy **ret, struct policy_error *err) WUR;
/* The same from memory; `name` is used in messages. */
int policy_load_string(const char *name, const char *yaml, size_t len, struct policy **ret,
                       struct policy_error *err) WUR;
void policy_free(struct policy *p);

/* The credential with this name, or NULL. */
const struct policy_credential *policy_credential_find(const struct policy *p, const char *name);

/* Derives the stable placeholder of a credential that has none configured:
 * "kw_" + name + "_" + 24 hex digits of SHA-256("keyward placeholder v1" NUL
 * name). Written to out (NUL-terminated); returns its length or -ENOBUFS. */
int policy_derive_placeholder(const char *name, char *out, size_t outlen) WUR;

/* ---- matching (match.c) ---- */

struct match_request {
	enum scheme scheme;
	const char *host;   /* lower case, no trailing dot */
	uint16_t port;      /* the actual port (443, 80, 8443...) */
	const char *method; /* as sent (upper case by HTTP) */
	const char *path;   /* normalised (path.h); no query */
};

enum match_fail {
	MATCH_OK,
	MATCH_HOST,   /* no route names this host */
	MATCH_PORT,   /* host listed, not on this port */
	MATCH_SCHEME, /* host listed for https only (or http only) */
	MATCH_METHOD, /* host and port listed, method not allowed */
	MATCH_PATH,   /* method allowed, path matches no glob */
};

struct match_result {
	enum match_fail fail;
	const struct policy_route *route; /* MATCH_OK: the first route that
	                                     allows the request; otherwise the
	                                     route that came closest, or NULL */
};

/* First route, in file order, that allows the request. */
void policy_match(const struct policy *p, const struct match_request *req, struct match_result *ret);
/* Whether any route could allow some request to scheme://host:port (used to
 * refuse a CONNECT before any TLS or DNS work). */
enum match_fail policy_match_host(const struct policy *p, enum scheme scheme, const char *host, uint16_t port,
                                  const struct policy_route **closest);
/* Whether host (lower case, no trailing dot) is "localhost" or a name
 * under it: RFC 6761 6.3 reserves them for loopback. A route naming one
 * implies allow_private, so the proxy never asks DNS for them (an answer
 * there could name any address, a metadata service's included): it dials
 * 127.0.0.1 and ::1. */
bool policy_host_is_localhost(const char *host);
/* Host name pattern test: exact (case-insensitive) or wildcard suffix. */
bool route_host_matches(const struct policy_route *r, const char *host);
/* Glob on a normalised path: '*' matches within one segment, '**' matches
 * across segments; a glob ending in slash-star-star also matches the directory itself. */
bool path_glob_match(const char *glob, const char *path);
/* Short words for reasons: "host", "port", "scheme", "method", "path". */
const char *match_fail_name(enum match_fail f);
