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

/* Fetches the secret of credential c. Returns 0 and *ret, or a negative
 * errno and a message in errbuf that names the credential and source but
 * never the value. */
int source_fetch(const struct policy_credential *c, struct secret **ret, char *errbuf, size_t errlen) WUR;

/* As source_fetch, and also when the secret should be fetched again, in
 * *ret_refresh_ms (Unix ms, 0: only when its source changes). An exec:
 * source is re-run a little before the expiry its command gives, and 10 s
 * after a failure (EXEC_RETRY_MS); an exec: value that has expired already is
 * an error. */
int source_fetch_timed(const struct policy_credential *c, struct secret **ret, int64_t *ret_refresh_ms, char *errbuf,
                       size_t errlen) WUR;

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

/* The current stamp of c's source in *ret. Cheap: one stat(2), no read. */
void source_stamp(const struct policy_credential *c, struct source_stamp *ret);
/* Whether two stamps name the same state of a source. */
bool source_stamp_eq(const struct source_stamp *a, const struct source_stamp *b);
