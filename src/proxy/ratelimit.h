/* Token buckets for the rate: limits of routes and credentials, shared by
 * the worker threads of one proxy and kept across reloads.
 *
 * A bucket is named by a key the proxy derives from the policy ("route 3
 * api.test:443", "credential github"), never from a request, so the
 * sandbox cannot make new buckets. A bucket holds up to `burst` tokens and
 * gains rate_count of them per rate_period_s; a request takes one from
 * each of its buckets, from all of them or from none. A reload that keeps
 * a key keeps its bucket (with the new rate and burst); buckets whose key
 * is gone stay until the table fills, which empties it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "policy/policy.h"

struct rate_table;

int rate_table_new(struct rate_table **ret) WUR;
void rate_table_free(struct rate_table *t);

struct rate_want {
	const char *key;
	const struct policy_quota *q; /* q->rate_count 0: no bucket */
};

/* Takes a token from the bucket of each entry of want, at monotonic time
 * now_ns. Returns true if every bucket had one (all were taken). Else none
 * is taken, *ret_which is the index of an empty one and *ret_retry_s the
 * seconds until each has a token again (at least 1). */
bool rate_take(struct rate_table *t, const struct rate_want *want, size_t n, uint64_t now_ns, size_t *ret_which,
               uint64_t *ret_retry_s);
