/* `keyward proxy`: the deny-by-default HTTP(S) proxy that attaches real
 * credentials. One event loop per worker thread; every connection lives on
 * one worker. See docs/proxy.md. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <signal.h>
#include <sys/types.h>

#include <openssl/types.h>

#include "common/util.h"

struct audit_log;
struct policy;
struct source_pin;
struct tls_ca;

#define PROXY_MAX_LISTEN  16
#define PROXY_MAX_RESOLVE 64

struct proxy_options {
	const char *policy_path;
	const char *listen[PROXY_MAX_LISTEN]; /* "HOST:PORT", "[::1]:PORT", "unix:PATH" */
	size_t n_listen;
	const char *audit_path;                 /* overrides the policy's audit: */
	const char *resolve[PROXY_MAX_RESOLVE]; /* "HOST:ADDR" pins */
	size_t n_resolve;
	int workers;            /* 0: one per CPU */
	const char *state_dir;  /* for the CA; NULL: state_dir() */
	const char *ready_file; /* if set, "PORT\n" of the first listener is written here once listening */

	/* For `keyward run`: */
	struct policy *policy;   /* already loaded: taken over, and policy_path only names it */
	struct source_pin *pins; /* with policy: its credentials' pins (source_pins_open), taken over */
	bool door;               /* serve door_fd, a listening socket made by the sandbox */
	int door_fd;
	const char *door_name;        /* for audit records */
	struct tls_ca *ca;            /* borrowed: mint with this CA instead of the state directory's */
	pid_t child;                  /* > 0: serve until this child exits; signals are passed on to it
	                           (SIGHUP included: it does not reload) */
	bool child_own_group;         /* the child is not in our process group: pass every signal on */
	int *child_status;            /* out: the child's wait status */
	int child_notice;             /* with child: a descriptor that turns readable when the child is
	                     about to exit; the proxy then stops at once, and waits for the
	                     child once the audit log is synced. -1: none */
	struct audit_log *audit;      /* already open: taken over (audit_path then only names it) */
	const sigset_t *restore_mask; /* the caller blocked signals: restore this mask once they are handled */
};

/* Reads the policy's upstream_ca files (top level, routes, token
 * endpoints) that are not read yet into it: upstream TLS contexts are
 * built from those bytes, never from the files again (a file that a
 * sandbox can write cannot be swapped later). keyward run calls it before
 * CMD exists; the proxy at each start and reload. 0, or a negative errno
 * with errbuf set. */
int proxy_read_cas(struct policy *p, char *errbuf, size_t errlen) WUR;

/* Runs the proxy until SIGTERM/SIGINT (drain, then return 0). Returns a
 * negative errno on a start-up failure, with the reason logged. */
int proxy_main(const struct proxy_options *opt) WUR;
