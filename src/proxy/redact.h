/* Response redaction: every occurrence of a real secret (and of its usual
 * encodings) in a response is replaced with its placeholder before the
 * sandbox sees it.
 *
 * Trust: the bytes fed to a redactor come from an upstream and may be
 * anything, split anywhere. The patterns are secrets: they live in memory
 * of their own that is wiped when freed, and are never logged.
 *
 * A redact_set is a list of (pattern -> replacement) pairs. It is built,
 * then sealed, and from then on immutable: a generation shares one set
 * among all the worker threads. A redactor is the streaming state of one
 * response: it scans the bytes of one or more sets' patterns, holds back
 * only bytes that may begin a match (at most the longest pattern - 1)
 * until the next bytes arrive, and gives the same output however the input is split.
 * At each position the longest pattern that matches wins; scanning goes on
 * after the replaced bytes (leftmost-longest, no overlap). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

/* The longest pattern a set accepts: a secret of SECRET_MAX bytes,
 * percent-encoded. */
#define REDACT_PATTERN_MAX (3 * 65536)
/* Encoded forms shorter than this are not added by redact_set_add_secret:
 * a few base64 characters match ordinary text too often. The raw secret is
 * always added, whatever its length. */
#define REDACT_ENCODED_MIN 8

struct redact_set;

/* A new, empty set (caller's; redact_set_free). Returns 0 or -ENOMEM. */
int redact_set_new(struct redact_set **ret) WUR;
/* Wipes every pattern and replacement; NULL is a no-op. */
void redact_set_free(struct redact_set *s);
/* Empties s (every pair wiped and freed) and unseals it, to be filled
 * again; what it allocated for its list of pairs is kept. */
void redact_set_clear(struct redact_set *s);
/* Adds one pair (both copied). An empty pattern or one longer than
 * REDACT_PATTERN_MAX is -EINVAL; a pattern already in the set is kept
 * with its first replacement (returns 0). -EBUSY once sealed. */
int redact_set_add(struct redact_set *s, const void *pat, size_t pl, const void *rep, size_t rl) WUR;
/* Adds a secret and the forms a response may carry it in, each mapped to
 * the same form of the placeholder:
 *   - the secret itself;
 *   - its standard base64 (padded), and the characters of its base64 that
 *     depend on the secret alone at each of the three alignments it can
 *     have inside a longer base64 text (a Basic "user:secret" pair, a
 *     token inside a JSON web token...), in standard and URL alphabets;
 *   - its percent-encoding (RFC 3986 unreserved kept), with upper- and
 *     lower-case hex digits.
 * Encoded forms shorter than REDACT_ENCODED_MIN or equal to another form
 * are left out. Returns 0 or a negative errno. */
int redact_set_add_secret(struct redact_set *s, const void *secret, size_t n, const char *placeholder) WUR;
/* Adds base64("user:secret") -> base64("user:placeholder"): the exact
 * Basic credentials keyward sent. Returns 0 or a negative errno. */
int redact_set_add_basic(struct redact_set *s, const char *user, size_t ul, const void *secret, size_t n,
                         const char *placeholder) WUR;
/* Sorts and indexes the set; after this it is read-only and may be shared
 * by threads. Returns 0 or -ENOMEM. */
int redact_set_seal(struct redact_set *s) WUR;
size_t redact_set_count(const struct redact_set *s);

/* Where a redactor's output goes: returns 0, or a negative errno that
 * redactor_feed/finish return as they are. */
typedef int (*redact_emit_fn)(void *ctx, const char *p, size_t n);

struct redactor;

#define REDACT_MAX_SETS 4

/* A redactor over up to REDACT_MAX_SETS sealed sets (NULL entries are
 * skipped; the sets must outlive it). Returns 0 and *ret (caller's;
 * redactor_free), -EINVAL (too many sets or one not sealed) or -ENOMEM. */
int redactor_new(const struct redact_set *const *sets, size_t n_sets, struct redactor **ret) WUR;
/* Wipes what it holds; NULL is a no-op. */
void redactor_free(struct redactor *r);
/* Wipes what r holds back and forgets its sets and count, keeping its
 * memory for redactor_restart. */
void redactor_clear(struct redactor *r);
/* Makes r as redactor_new(sets, n_sets) would, for the next response:
 * cleared, with the sets given, its work buffer kept if it is large
 * enough. -EINVAL as redactor_new, and r is then left with no sets. */
int redactor_restart(struct redactor *r, const struct redact_set *const *sets, size_t n_sets) WUR;
/* Scans n more bytes; emits what is decided, keeps back what might begin
 * a match. Returns 0 or what emit returned. */
int redactor_feed(struct redactor *r, const char *p, size_t n, redact_emit_fn emit, void *ctx) WUR;
/* The input ended: decides and emits what was kept back. */
int redactor_finish(struct redactor *r, redact_emit_fn emit, void *ctx) WUR;
/* Replacements made so far. */
uint64_t redactor_count(const struct redactor *r);
/* Bytes kept back right now (at most the longest pattern - 1). */
size_t redactor_held(const struct redactor *r);
