/* Where a credential's secret comes from: keyward's own environment, a
 * file, the vault or a command, and how to tell that it changed (rotation). The value is checked to be safe in an HTTP header (no CR, LF, NUL
 * or other control bytes) so that it can never split a request. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "common/secret.h"
#include "policy/policy.h"

/* A file: credential of a process that reads it for long (the proxy, which
 * re-reads it on every change) keeps meaning the file it meant when the
 * policy was loaded: its folder is opened then, and every read opens the
 * file's last name in that folder. A folder renamed or replaced by a link
 * afterwards (by the sandbox, when the file lies in its workspace) cannot
 * point keyward at another file; a file renamed over the old one in the
 * same folder (how secret managers rotate) is read. */
struct source_pin {
	int dirfd; /* O_PATH descriptor of the file's folder, or -1 */
	int err;   /* why that folder could not be opened (negative errno), or 0 */
};

/* The pins of p's credentials, in *ret: an array of p->n_creds (the
 * caller frees it with source_pins_free), with dirfd -1 for the sources
 * that are not files. Must be called before anyone who must not choose the
 * file (the sandbox's CMD) can rename folders on its path. A folder that
 * cannot be opened is no error here: the credential's reads fail, naming
 * it. Returns 0 or -ENOMEM. */
int source_pins_open(const struct policy *p, struct source_pin **ret) WUR;
void source_pins_free(struct source_pin *pins, size_t n);

/* Whether placeholder is the secret s (NULL: no), or holds it when
 * s is at least SOURCE_PLACEHOLDER_MIN bytes (a shorter value, a client id
 * say, may be part of a placeholder by chance: the derived ones hold the
 * credential's name). A real secret pasted as placeholder: is given to
 * every sandbox and printed by `keyward policy check`.
 * source_placeholder_holding: the first credential of p whose placeholder
 * holds s, or NULL. */
#define SOURCE_PLACEHOLDER_MIN 16
bool source_placeholder_holds(const char *placeholder, const struct secret *s);
const struct policy_credential *source_placeholder_holding(const struct policy *p, const struct secret *s);

/* How messages at run time name c's source: "file:PATH", "vault:NAME",
 * "env:VAR", or "its exec: command" (a command line may carry a token of
 * its own, and these messages reach logs, the audit log and, in a 503, the
 * sandbox: only `keyward policy check` prints the command). Returns buf,
 * or a constant. */
const char *source_label(const struct policy_credential *c, char *buf, size_t n);

/* Fetches the secret of credential c, through pin (from source_pins_open;
 * NULL: the file by its path, for commands that read it once). Returns 0
 * and *ret, or a negative errno and a message in errbuf that names the
 * credential and source but never the value. */
int source_fetch(const struct policy_credential *c, const struct source_pin *pin, struct secret **ret, char *errbuf,
                 size_t errlen) WUR;

/* As source_fetch, and also when the secret should be fetched again, in
 * *ret_refresh_ms (Unix ms, 0: only when its source changes). An exec:
 * source is re-run a little before the expiry its command gives, and 10 s
 * after a failure (EXEC_RETRY_MS); an exec: value that has expired already is
 * an error. */
int source_fetch_timed(const struct policy_credential *c, const struct source_pin *pin, struct secret **ret,
                       int64_t *ret_refresh_ms, char *errbuf, size_t errlen) WUR;

/* What a credential's source looked like when its secret was read: the
 * identity of the vault file (vault:) or of the file (file:), as stat(2)
 * gives it. A rename over the file changes st_ino; an edit in place changes
 * st_mtim or st_size. env: sources never change while keyward runs. A
 * missing or unreadable file has a stamp too (err), so that its
 * reappearance is seen. */
struct source_stamp {
	int err; /* 0, or the negative errno of stat */
	dev_t dev;
	ino_t ino;
	struct timespec mtim;
	off_t size;
	/* exec: sources: when to run the command again (Unix ms; 0: not
	 * until the policy is reloaded). Not compared by source_stamp_eq. */
	int64_t refresh_ms;
};

/* The current stamp of c's source in *ret, through pin as source_fetch.
 * Cheap: one stat(2), no read. */
void source_stamp(const struct policy_credential *c, const struct source_pin *pin, struct source_stamp *ret);
/* Whether two stamps name the same state of a source. */
bool source_stamp_eq(const struct source_stamp *a, const struct source_stamp *b);
