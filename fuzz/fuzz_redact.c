/* The response redactor (src/proxy/redact.h): patterns, text and the
 * points where the text is cut into feeds all come from the input.
 *
 * Input: byte 0 picks the mode and the number of patterns; then per
 * pattern a length byte, its bytes and a replacement length; then the cut
 * points; the rest is the text. Pattern and text bytes are folded into a
 * small alphabet so that matches, overlaps and prefixes are common.
 *
 * Properties:
 *  - the output does not depend on where the text is cut (each split is
 *    compared with the text fed whole, and with a naive one-pass
 *    leftmost-longest replacement);
 *  - no pattern survives in the output when replacements share no byte
 *    with patterns (as placeholders share none with the secrets' edges in
 *    practice; here it is made so);
 *  - the bytes kept back never reach the longest pattern;
 *  - mode 1 builds the set from a secret with redact_set_add_secret (its
 *    base64 and percent forms) and checks split invariance there too. */
#include <string.h>

#include "common/buf.h"
#include "fuzz.h"
#include "proxy/redact.h"

#define MAX_PATTERNS 6
#define MAX_CUTS     8

struct out {
	char *p;
	size_t n, cap;
};

static int emit(void *ctx, const char *p, size_t n)
{
	struct out *o = ctx;
	if (o->n + n > o->cap) {
		size_t cap = (o->n + n) * 2 + 64;
		char *q = realloc(o->p, cap);
		if (!q)
			abort();
		o->p = q;
		o->cap = cap;
	}
	memcpy(o->p + o->n, p, n);
	o->n += n;
	return 0;
}

static void run(const struct redact_set *s, const char *text, size_t n, const size_t *cuts, size_t n_cuts,
                size_t max_len, struct out *o, uint64_t *count)
{
	struct redactor *r;
	fuzz_assert(redactor_new(&s, 1, &r) == 0);
	size_t at = 0;
	for (size_t i = 0; i <= n_cuts; i++) {
		size_t end = i < n_cuts ? cuts[i] : n;
		fuzz_assert(redactor_feed(r, text + at, end - at, emit, o) == 0);
		fuzz_assert(redactor_held(r) < (max_len ? max_len : 1));
		at = end;
	}
	fuzz_assert(redactor_finish(r, emit, o) == 0);
	fuzz_assert(redactor_held(r) == 0);
	*count = redactor_count(r);
	redactor_free(r);
}

static bool contains(const char *h, size_t hn, const char *nd, size_t nn)
{
	if (nn == 0 || nn > hn)
		return false;
	for (size_t i = 0; i + nn <= hn; i++)
		if (memcmp(h + i, nd, nn) == 0)
			return true;
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char pat_abc[] = "abcd";
	static const char rep_abc[] = "XYZ";
	/* mode 1: the secret's alphabet and what its encodings are made of */
	static const char text_abc[] = "ab/+=%&A0YWIvKz2FBD3";
	char pats[MAX_PATTERNS][16], reps[MAX_PATTERNS][8];
	size_t pl[MAX_PATTERNS], rl[MAX_PATTERNS];
	size_t i = 0, np, max_len = 0;

	if (size < 2)
		return 0;
	int mode = data[i] & 1;
	np = (size_t)(data[i++] >> 1) % MAX_PATTERNS + 1;

	struct redact_set *s;
	fuzz_assert(redact_set_new(&s) == 0);
	char secret[16];
	size_t sl = 0;
	if (mode == 0) {
		for (size_t k = 0; k < np; k++) {
			pl[k] = i < size ? data[i++] % 15 + 1 : 1;
			for (size_t j = 0; j < pl[k]; j++)
				pats[k][j] = pat_abc[i < size ? data[i++] % 4 : 0];
			rl[k] = i < size ? data[i++] % 7 + 1 : 1;
			for (size_t j = 0; j < rl[k]; j++)
				reps[k][j] = rep_abc[(k + j) % 3];
			fuzz_assert(redact_set_add(s, pats[k], pl[k], reps[k], rl[k]) == 0);
			if (pl[k] > max_len)
				max_len = pl[k];
		}
	} else {
		/* a secret from a wider alphabet, with characters that base64
		 * and percent-encoding change */
		static const char sec_abc[] = "ab/+=%&A0";
		sl = i < size ? data[i++] % 15 + 1 : 1;
		for (size_t j = 0; j < sl; j++)
			secret[j] = sec_abc[i < size ? data[i++] % 9 : 0];
		fuzz_assert(redact_set_add_secret(s, secret, sl, "__PH__") == 0);
		max_len = 3 * sl + 8;
	}
	fuzz_assert(redact_set_seal(s) == 0);

	size_t n_cuts = i < size ? data[i++] % (MAX_CUTS + 1) : 0;
	size_t cut_bytes[MAX_CUTS];
	for (size_t k = 0; k < n_cuts; k++)
		cut_bytes[k] = i < size ? data[i++] : 0;

	size_t n = size > i ? size - i : 0;
	char *text = fuzz_alloc_exact(n);
	for (size_t k = 0; k < n; k++) {
		uint8_t b = data[i + k];
		/* mostly the patterns' alphabet, some other bytes */
		text[k] = mode == 0 ? (b < 200 ? pat_abc[b % 4] : (char)b) : (b < 200 ? text_abc[b % 20] : (char)b);
	}
	size_t cuts[MAX_CUTS];
	for (size_t k = 0; k < n_cuts; k++)
		cuts[k] = n ? cut_bytes[k] % (n + 1) : 0;
	/* sorted */
	for (size_t a = 1; a < n_cuts; a++)
		for (size_t b = a; b > 0 && cuts[b - 1] > cuts[b]; b--) {
			size_t t = cuts[b];
			cuts[b] = cuts[b - 1];
			cuts[b - 1] = t;
		}

	struct out whole = { 0 }, split = { 0 };
	uint64_t c_whole, c_split;
	run(s, text, n, NULL, 0, max_len, &whole, &c_whole);
	run(s, text, n, cuts, n_cuts, max_len, &split, &c_split);
	fuzz_assert(whole.n == split.n && (whole.n == 0 || memcmp(whole.p, split.p, whole.n) == 0));
	fuzz_assert(c_whole == c_split);

	if (mode == 0) {
		/* the naive reference */
		struct out ref = { 0 };
		uint64_t c_ref = 0;
		for (size_t k = 0; k < n;) {
			size_t best = SIZE_MAX, bl = 0;
			for (size_t q = 0; q < np; q++)
				if (pl[q] <= n - k && pl[q] > bl && memcmp(text + k, pats[q], pl[q]) == 0)
					best = q, bl = pl[q];
			if (best == SIZE_MAX) {
				emit(&ref, text + k, 1);
				k++;
			} else {
				emit(&ref, reps[best], rl[best]);
				c_ref++;
				k += bl;
			}
		}
		fuzz_assert(ref.n == whole.n && (ref.n == 0 || memcmp(ref.p, whole.p, ref.n) == 0));
		fuzz_assert(c_ref == c_whole);
		for (size_t q = 0; q < np; q++)
			fuzz_assert(!contains(whole.p, whole.n, pats[q], pl[q]));
		free(ref.p);
	}
	free(whole.p);
	free(split.p);
	free(text);
	redact_set_free(s);
	return 0;
}
