#include "proxy/redact.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

struct pair {
	char *pat; /* pl bytes, then rep's rl bytes, in one wiped block */
	size_t pl;
	const char *rep;
	size_t rl;
};

struct redact_set {
	struct pair *pairs;
	size_t n, cap;
	size_t max_len;
	bool sealed;
	/* after sealing: pairs sorted by (first byte, length descending);
	 * start[b]..start[b+1] are the pairs that begin with byte b, and
	 * first_bytes[0..n_first) are the bytes some pair begins with */
	uint32_t start[257];
	unsigned char first_bytes[256];
	size_t n_first;
};

int redact_set_new(struct redact_set **ret)
{
	struct redact_set *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}

void redact_set_clear(struct redact_set *s)
{
	for (size_t i = 0; i < s->n; i++) {
		OPENSSL_cleanse(s->pairs[i].pat, s->pairs[i].pl + s->pairs[i].rl);
		free(s->pairs[i].pat);
	}
	s->n = 0;
	s->max_len = 0;
	s->sealed = false;
	s->n_first = 0; /* start[] is made again by the next seal */
}

void redact_set_free(struct redact_set *s)
{
	if (!s)
		return;
	redact_set_clear(s);
	free(s->pairs);
	free(s);
}

size_t redact_set_count(const struct redact_set *s)
{
	return s ? s->n : 0;
}

int redact_set_add(struct redact_set *s, const void *pat, size_t pl, const void *rep, size_t rl)
{
	if (s->sealed)
		return -EBUSY;
	if (pl == 0 || pl > REDACT_PATTERN_MAX || rl > REDACT_PATTERN_MAX)
		return -EINVAL;
	for (size_t i = 0; i < s->n; i++)
		if (s->pairs[i].pl == pl && memcmp(s->pairs[i].pat, pat, pl) == 0)
			return 0;
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 16;
		struct pair *p = reallocarray(s->pairs, cap, sizeof(*p));
		if (!p)
			return -ENOMEM;
		s->pairs = p;
		s->cap = cap;
	}
	char *block = malloc(pl + rl + 1);
	if (!block)
		return -ENOMEM;
	memcpy(block, pat, pl);
	if (rl)
		memcpy(block + pl, rep, rl);
	s->pairs[s->n++] = (struct pair){ .pat = block, .pl = pl, .rep = block + pl, .rl = rl };
	if (pl > s->max_len)
		s->max_len = pl;
	return 0;
}

static int pair_cmp(const void *a, const void *b)
{
	const struct pair *x = a, *y = b;
	unsigned char fx = (unsigned char)x->pat[0], fy = (unsigned char)y->pat[0];
	if (fx != fy)
		return fx < fy ? -1 : 1;
	return x->pl > y->pl ? -1 : x->pl < y->pl ? 1 : 0;
}

int redact_set_seal(struct redact_set *s)
{
	if (s->sealed)
		return 0;
	if (s->n > UINT32_MAX)
		return -ENOMEM;
	if (s->n)
		qsort(s->pairs, s->n, sizeof(*s->pairs), pair_cmp);
	size_t k = 0;
	for (unsigned b = 0; b < 256; b++) {
		s->start[b] = (uint32_t)k;
		while (k < s->n && (unsigned char)s->pairs[k].pat[0] == b)
			k++;
		if (k > s->start[b])
			s->first_bytes[s->n_first++] = (unsigned char)b;
	}
	s->start[256] = (uint32_t)s->n;
	s->sealed = true;
	return 0;
}

/* ---- the forms of a secret ---- */

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* A wiped scratch block. */
struct scratch {
	char *p;
	size_t n;
};

static void scratch_free(struct scratch *x)
{
	if (x->p) {
		OPENSSL_cleanse(x->p, x->n);
		free(x->p);
	}
	x->p = NULL;
	x->n = 0;
}

/* Base64 of `lead` zero bytes followed by in[0..n), in the alphabet abc,
 * padded when pad. */
static int b64(const unsigned char *in, size_t n, size_t lead, const char *abc, bool pad, struct scratch *out)
{
	size_t total = lead + n;
	size_t cap = (total + 2) / 3 * 4;
	out->p = malloc(cap + 1);
	out->n = cap + 1;
	if (!out->p)
		return -ENOMEM;
	size_t o = 0;
	for (size_t i = 0; i < total; i += 3) {
		uint32_t v = 0;
		size_t k = 0;
		for (; k < 3 && i + k < total; k++) {
			size_t j = i + k;
			v |= (uint32_t)(j < lead ? 0 : in[j - lead]) << (16 - 8 * k);
		}
		out->p[o++] = abc[(v >> 18) & 63];
		out->p[o++] = abc[(v >> 12) & 63];
		if (k > 1)
			out->p[o++] = abc[(v >> 6) & 63];
		else if (pad)
			out->p[o++] = '=';
		if (k > 2)
			out->p[o++] = abc[v & 63];
		else if (pad)
			out->p[o++] = '=';
	}
	out->p[o] = '\0';
	out->n = o;
	return 0;
}

/* The characters of base64(lead zero bytes + in) whose six bits all come
 * from in: they appear whenever in sits at this alignment in a longer
 * base64 text, whatever surrounds it. */
static int b64_inner(const unsigned char *in, size_t n, size_t lead, const char *abc, size_t *ret_off, size_t *ret_len,
                     struct scratch *out)
{
	int r = b64(in, n, lead, abc, false, out);
	if (r < 0)
		return r;
	size_t first = (8 * lead + 5) / 6; /* first char starting at or after bit 8*lead */
	size_t end = 8 * (lead + n) / 6;   /* chars ending at or before the last bit of in */
	*ret_off = first;
	*ret_len = end > first ? end - first : 0;
	return 0;
}

static int percent(const unsigned char *in, size_t n, const char *digits, struct scratch *out)
{
	out->p = malloc(3 * n + 1);
	out->n = 3 * n + 1;
	if (!out->p)
		return -ENOMEM;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = in[i];
		bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		                  c == '-' || c == '.' || c == '_' || c == '~';
		if (unreserved) {
			out->p[o++] = (char)c;
		} else {
			out->p[o++] = '%';
			out->p[o++] = digits[c >> 4];
			out->p[o++] = digits[c & 15];
		}
	}
	out->p[o] = '\0';
	out->n = o;
	return 0;
}

/* Adds an encoded form unless it is too short to be told from text. */
static int add_form(struct redact_set *s, const char *pat, size_t pl, const char *rep, size_t rl)
{
	if (pl < REDACT_ENCODED_MIN)
		return 0;
	return redact_set_add(s, pat, pl, rep, rl);
}

static int add_base64_forms(struct redact_set *s, const unsigned char *sec, size_t n, const unsigned char *ph,
                            size_t pn)
{
	static const char *const abcs[] = { b64_std, b64_url };
	int r = 0;
	for (size_t a = 0; a < ARRAY_SIZE(abcs) && r == 0; a++) {
		struct scratch x = { 0 }, y = { 0 };
		/* the whole value on its own, padded (standard) or not (url) */
		r = b64(sec, n, 0, abcs[a], a == 0, &x);
		if (r == 0)
			r = b64(ph, pn, 0, abcs[a], a == 0, &y);
		if (r == 0)
			r = add_form(s, x.p, x.n, y.p, y.n);
		scratch_free(&x);
		scratch_free(&y);
		for (size_t lead = 0; lead < 3 && r == 0; lead++) {
			size_t xo, xl, yo, yl;
			r = b64_inner(sec, n, lead, abcs[a], &xo, &xl, &x);
			if (r == 0)
				r = b64_inner(ph, pn, lead, abcs[a], &yo, &yl, &y);
			if (r == 0)
				r = add_form(s, x.p + xo, xl, y.p + yo, yl);
			scratch_free(&x);
			scratch_free(&y);
		}
	}
	return r;
}

int redact_set_add_secret(struct redact_set *s, const void *secret, size_t n, const char *placeholder)
{
	const unsigned char *sec = secret;
	const unsigned char *ph = (const unsigned char *)placeholder;
	size_t pn = strlen(placeholder);
	if (n == 0)
		return -EINVAL;
	int r = redact_set_add(s, sec, n, ph, pn);
	if (r == 0)
		r = add_base64_forms(s, sec, n, ph, pn);
	static const char *const digits[] = { "0123456789ABCDEF", "0123456789abcdef" };
	for (size_t d = 0; d < ARRAY_SIZE(digits) && r == 0; d++) {
		struct scratch x = { 0 }, y = { 0 };
		r = percent(sec, n, digits[d], &x);
		if (r == 0)
			r = percent(ph, pn, digits[d], &y);
		if (r == 0 && (x.n != n || memcmp(x.p, sec, n) != 0))
			r = add_form(s, x.p, x.n, y.p, y.n);
		scratch_free(&x);
		scratch_free(&y);
	}
	return r;
}

int redact_set_add_basic(struct redact_set *s, const char *user, size_t ul, const void *secret, size_t n,
                         const char *placeholder)
{
	size_t pn = strlen(placeholder);
	struct scratch a = { malloc(ul + 1 + n), ul + 1 + n }, b = { malloc(ul + 1 + pn), ul + 1 + pn };
	struct scratch x = { 0 }, y = { 0 };
	int r = a.p && b.p ? 0 : -ENOMEM;
	if (r == 0) {
		memcpy(a.p, user, ul);
		a.p[ul] = ':';
		memcpy(a.p + ul + 1, secret, n);
		memcpy(b.p, user, ul);
		b.p[ul] = ':';
		memcpy(b.p + ul + 1, placeholder, pn);
		r = b64((const unsigned char *)a.p, a.n, 0, b64_std, true, &x);
	}
	if (r == 0)
		r = b64((const unsigned char *)b.p, b.n, 0, b64_std, true, &y);
	if (r == 0)
		r = redact_set_add(s, x.p, x.n, y.p, y.n);
	scratch_free(&a);
	scratch_free(&b);
	scratch_free(&x);
	scratch_free(&y);
	return r;
}

/* ---- the streaming replacer ---- */

/* Input is taken in slices of this size, so that the work buffer stays
 * bounded whatever the caller feeds at once. */
#define SLICE 16384

struct redactor {
	const struct redact_set *sets[REDACT_MAX_SETS];
	size_t n_sets;
	size_t max_len;
	bool first[256];                /* some pattern of some set starts with this byte */
	unsigned char first_bytes[256]; /* those bytes, n_first of them */
	size_t n_first;
	char *work;       /* kept-back bytes, then the current slice; made when first needed */
	size_t cap;       /* what work must hold: the longest pattern - 1, and a slice */
	size_t work_size; /* what work holds (a restarted redactor may need less) */
	size_t held;
	uint64_t count;
};

/* Takes the sets into a redactor that holds none. */
static int take_sets(struct redactor *r, const struct redact_set *const *sets, size_t n_sets)
{
	if (n_sets > REDACT_MAX_SETS)
		return -EINVAL;
	for (size_t i = 0; i < n_sets; i++) {
		const struct redact_set *s = sets[i];
		if (!s)
			continue;
		if (!s->sealed)
			return -EINVAL;
		r->sets[r->n_sets++] = s;
		if (s->max_len > r->max_len)
			r->max_len = s->max_len;
		for (size_t k = 0; k < s->n_first; k++) {
			unsigned char b = s->first_bytes[k];
			if (!r->first[b]) {
				r->first[b] = true;
				r->first_bytes[r->n_first++] = b;
			}
		}
	}
	r->cap = (r->max_len ? r->max_len - 1 : 0) + SLICE;
	return 0;
}

int redactor_new(const struct redact_set *const *sets, size_t n_sets, struct redactor **ret)
{
	struct redactor *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	int e = take_sets(r, sets, n_sets);
	if (e < 0) {
		free(r);
		return e;
	}
	*ret = r;
	return 0;
}

static void forget_sets(struct redactor *r)
{
	for (size_t k = 0; k < r->n_first; k++)
		r->first[r->first_bytes[k]] = false;
	r->n_first = 0;
	r->n_sets = 0;
	r->max_len = 0;
	r->cap = SLICE;
}

void redactor_clear(struct redactor *r)
{
	if (r->work)
		OPENSSL_cleanse(r->work, r->held);
	r->held = 0;
	r->count = 0;
	forget_sets(r);
}

int redactor_restart(struct redactor *r, const struct redact_set *const *sets, size_t n_sets)
{
	redactor_clear(r);
	int e = take_sets(r, sets, n_sets);
	if (e < 0)
		forget_sets(r);
	if (r->work && r->work_size < r->cap) {
		free(r->work); /* held nothing: wiped above */
		r->work = NULL;
		r->work_size = 0;
	}
	return e;
}

/* Past work[held] the buffer holds nothing (keep() wipes what it drops),
 * so only the kept-back bytes need wiping. */
void redactor_free(struct redactor *r)
{
	if (!r)
		return;
	if (r->work) {
		OPENSSL_cleanse(r->work, r->held);
		free(r->work);
	}
	free(r);
}

/* Most responses hold no beginning of a secret at the end of a read, and
 * never need the work buffer. */
static int need_work(struct redactor *r)
{
	if (r->work)
		return 0;
	if (!(r->work = malloc(r->cap)))
		return -ENOMEM;
	r->work_size = r->cap;
	return 0;
}

uint64_t redactor_count(const struct redactor *r)
{
	return r->count;
}

size_t redactor_held(const struct redactor *r)
{
	return r->held;
}

/* The longest pair of any set that matches b[i..m), or NULL. */
static const struct pair *match_at(const struct redactor *r, const char *b, size_t i, size_t m)
{
	const struct pair *best = NULL;
	unsigned char f = (unsigned char)b[i];
	for (size_t k = 0; k < r->n_sets; k++) {
		const struct redact_set *s = r->sets[k];
		for (uint32_t j = s->start[f]; j < s->start[f + 1]; j++) {
			const struct pair *p = &s->pairs[j];
			if (best && p->pl <= best->pl)
				break; /* sorted longest first */
			if (p->pl <= m - i && memcmp(b + i, p->pat, p->pl) == 0) {
				best = p;
				break;
			}
		}
	}
	return best;
}

/* Whether some pattern longer than what is left of work[i..m) begins with
 * it: then position i cannot be decided before more bytes arrive. */
static bool could_begin(const struct redactor *r, const char *b, size_t i, size_t m)
{
	unsigned char f = (unsigned char)b[i];
	size_t avail = m - i;
	for (size_t k = 0; k < r->n_sets; k++) {
		const struct redact_set *s = r->sets[k];
		for (uint32_t j = s->start[f]; j < s->start[f + 1]; j++) {
			const struct pair *p = &s->pairs[j];
			if (p->pl <= avail)
				break; /* sorted longest first */
			if (memcmp(b + i, p->pat, avail) == 0)
				return true;
		}
	}
	return false;
}

/* With a few first bytes, memchr(3) for each finds the next position at
 * which a pattern may start many bytes at a time; with more, a table
 * lookup per byte. */
#define MEMCHR_MAX 8

/* The first position >= i at which some pattern may start, or m. next[]
 * caches the next occurrence of each first byte (SIZE_MAX: not looked
 * for yet). */
static size_t next_candidate(const struct redactor *r, const char *b, size_t i, size_t m, size_t *next)
{
	if (r->n_first > MEMCHR_MAX) {
		while (i < m && !r->first[(unsigned char)b[i]])
			i++;
		return i;
	}
	size_t best = m;
	for (size_t k = 0; k < r->n_first; k++) {
		if (next[k] == SIZE_MAX || next[k] < i) {
			const char *q = i < m ? memchr(b + i, r->first_bytes[k], m - i) : NULL;
			next[k] = q ? (size_t)(q - b) : m;
		}
		if (next[k] < best)
			best = next[k];
	}
	return best;
}

/* Decides the positions of b[0..m): all of them when final, else up to
 * the first one where a pattern may begin that the bytes so far do not
 * complete. Returns that position: b[ret..m) must be kept back. Only those
 * bytes are, so a stream that carries no beginning of a secret (server-sent
 * events...) is not delayed. */
static long scan(struct redactor *r, const char *b, size_t m, bool final, redact_emit_fn emit, void *ctx)
{
	size_t safe = m >= r->max_len ? m - r->max_len + 1 : 0; /* every pattern fits before here */
	size_t i = 0, run = 0;
	size_t next[MEMCHR_MAX];
	int e;

	for (size_t k = 0; k < MEMCHR_MAX; k++)
		next[k] = SIZE_MAX;
	while (i < m) {
		i = next_candidate(r, b, i, m, next);
		if (i >= m)
			break;
		if (!final && i >= safe && could_begin(r, b, i, m))
			break;
		const struct pair *p = match_at(r, b, i, m);
		if (!p) {
			i++;
			continue;
		}
		if (i > run && (e = emit(ctx, b + run, i - run)) < 0)
			return e;
		if (p->rl && (e = emit(ctx, p->rep, p->rl)) < 0)
			return e;
		r->count++;
		i += p->pl;
		run = i;
	}
	if (i > m)
		i = m;
	if (i > run && (e = emit(ctx, b + run, i - run)) < 0)
		return e;
	return (long)i;
}

/* Keeps b[from..m) back in the work buffer (b may be the work buffer). */
static int keep(struct redactor *r, const char *b, size_t from, size_t m)
{
	size_t old = r->held;
	if (m > from && need_work(r) < 0)
		return -ENOMEM;
	r->held = m - from;
	if (r->held)
		memmove(r->work, b + from, r->held);
	if (old > r->held)
		OPENSSL_cleanse(r->work + r->held, old - r->held);
	return 0;
}

int redactor_feed(struct redactor *r, const char *p, size_t n, redact_emit_fn emit, void *ctx)
{
	while (n > 0) {
		long k;
		if (r->held == 0) {
			/* nothing kept back: scan the caller's bytes where they are */
			k = scan(r, p, n, false, emit, ctx);
			if (k < 0)
				return (int)k;
			return keep(r, p, (size_t)k, n);
		}
		/* complete what was kept back with the next bytes */
		size_t take = n < SLICE ? n : SLICE;
		memcpy(r->work + r->held, p, take);
		p += take;
		n -= take;
		size_t m = r->held + take;
		r->held = m;
		k = scan(r, r->work, m, false, emit, ctx);
		if (k < 0)
			return (int)k;
		if (keep(r, r->work, (size_t)k, m) < 0)
			return -ENOMEM;
	}
	return 0;
}

int redactor_finish(struct redactor *r, redact_emit_fn emit, void *ctx)
{
	long k = scan(r, r->work, r->held, true, emit, ctx);
	if (k < 0)
		return (int)k;
	return keep(r, r->work, r->held, r->held);
}
