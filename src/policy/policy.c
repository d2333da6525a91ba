/* Policy loading: YAML text -> struct policy.
 *
 * Trust boundary: the policy file is written by the operator, but it may
 * come from a repository the sandboxed code can edit, so it is parsed as
 * hostile input. libyaml's event API feeds a small tree of our own, built
 * with ceilings on size, depth and node count; anchors and aliases are
 * refused outright (no billion laughs), tags too. Validation then walks the
 * tree with one schema per mapping: an unknown or duplicate key is an error,
 * never ignored, because a typo in a security policy must not widen it.
 * Every message names FILE:LINE:COLUMN. Messages never echo from: or
 * placeholder: values, in case a real secret was pasted there by mistake. */
#include "policy/policy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <yaml.h>

#include <openssl/evp.h>

#include "common/encode.h"
#include "secrets/vault_format.h"

#define POLICY_MAX_BYTES  (1024 * 1024)
#define POLICY_MAX_DEPTH  32
#define POLICY_MAX_NODES  100000
#define POLICY_MAX_CREDS  1024
#define POLICY_MAX_ROUTES 4096
#define ROUTE_MAX_METHODS 64
#define ROUTE_MAX_PATHS   256
#define GLOB_MAX          1024
#define HOST_MAX          253
#define PLACEHOLDER_MIN   16
#define PLACEHOLDER_MAX   256

static const char inject_expected[] =
    "(expected bearer, basic, swap, sigv4, {basic: USER}, {header: NAME, value: TEMPLATE} or "
    "{query: PARAM})";

/* ---- the YAML tree ---- */

enum ynode_type { Y_SCALAR, Y_MAP, Y_SEQ };

struct ynode {
	enum ynode_type type;
	int line, column;     /* 1-based, of the node's first character */
	char *value;          /* Y_SCALAR: NUL-terminated copy */
	size_t len;           /* Y_SCALAR: bytes in value (may hold a NUL) */
	bool plain;           /* Y_SCALAR: unquoted, so it may be null */
	struct ynode **items; /* Y_SEQ: items; Y_MAP: key, value, key, value... */
	size_t n, cap;
};

static void ynode_free(struct ynode *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->n; i++)
		ynode_free(n->items[i]);
	free(n->items);
	free(n->value);
	free(n);
}

struct ctx {
	const char *name;
	struct policy_error *err;
	size_t n_nodes;
};

/* ---- messages ---- */

static int fail_at(struct ctx *c, int line, int column, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail_at(struct ctx *c, int line, int column, const char *fmt, ...)
{
	if (!c->err)
		return -EINVAL;
	char *m = c->err->message;
	size_t sz = sizeof(c->err->message);
	int n;
	if (line > 0)
		n = snprintf(m, sz, "%s:%d:%d: ", c->name, line, column);
	else
		n = snprintf(m, sz, "%s: ", c->name);
	if (n >= 0 && (size_t)n < sz) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(m + n, sz - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

#define fail(c, node, ...) fail_at((c), (node)->line, (node)->column, __VA_ARGS__)

static int fail_oom(struct ctx *c)
{
	fail_at(c, 0, 0, "out of memory");
	return -ENOMEM;
}

/* Text from the file, made safe to print inside quotes: at most 64 bytes,
 * and nothing that could move a terminal's cursor. */
struct quoted {
	char s[72];
};

static const char *quote(struct quoted *q, const char *s)
{
	size_t i = 0;
	for (; s[i] && i < 64; i++) {
		unsigned char ch = (unsigned char)s[i];
		q->s[i] = (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\') ? '?' : (char)ch;
	}
	if (s[i]) {
		memcpy(q->s + i, "...", 3);
		i += 3;
	}
	q->s[i] = '\0';
	return q->s;
}

#define Q(s) quote(&(struct quoted){ { 0 } }, (s))

/* ---- text checks before libyaml sees it ---- */

/* Length of the UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF) with its code point, or 0. */
static size_t utf8_decode(const unsigned char *p, size_t n, unsigned *ret_cp)
{
	unsigned cp, min;
	size_t len;

	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2, cp = p[0] & 0x1f, min = 0x80;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3, cp = p[0] & 0x0f, min = 0x800;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4, cp = p[0] & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	*ret_cp = cp;
	return len;
}

/* YAML 1.2 section 5.1 allows only printable characters; libyaml checks
 * too, but its reader errors carry no line, and NUL would end our copies. */
static int check_text(struct ctx *c, const char *text, size_t len)
{
	const unsigned char *p = (const unsigned char *)text;
	int line = 1, column = 1;

	if (len > POLICY_MAX_BYTES)
		return fail_at(c, 0, 0, "policy is larger than 1 MiB");
	for (size_t i = 0; i < len;) {
		unsigned cp = p[i];
		size_t step = 1;
		if (cp == 0)
			return fail_at(c, line, column, "NUL byte in policy");
		if (cp >= 0x80) {
			step = utf8_decode(p + i, len - i, &cp);
			if (step == 0)
				return fail_at(c, line, column, "invalid UTF-8 in policy");
		}
		if ((cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || cp == 0x7f ||
		    (cp >= 0x80 && cp <= 0x9f && cp != 0x85) || cp == 0xfffe || cp == 0xffff)
			return fail_at(c, line, column, "control character U+%04X in policy", cp);
		if (cp == '\n' || (cp == '\r' && (i + 1 == len || p[i + 1] != '\n'))) {
			line++;
			column = 1;
		} else if (cp != '\r') {
			column++;
		}
		i += step;
	}
	return 0;
}

/* ---- events to tree ---- */

struct builder {
	struct ynode *stack[POLICY_MAX_DEPTH];
	size_t depth;
	struct ynode *root;
	int documents;
};

static int fail_mark(struct ctx *c, yaml_mark_t m, const char *msg)
{
	return fail_at(c, (int)m.line + 1, (int)m.column + 1, "%s", msg);
}

struct keyref {
	const char *s;
	size_t len;
	size_t idx; /* pair index in the mapping */
};

static int keyref_cmp(const void *a, const void *b)
{
	const struct keyref *x = a, *y = b;
	size_t n = x->len < y->len ? x->len : y->len;
	int d = memcmp(x->s, y->s, n);
	if (d == 0 && x->len != y->len)
		d = x->len < y->len ? -1 : 1;
	if (d == 0)
		d = x->idx < y->idx ? -1 : 1;
	return d;
}

/* Duplicate keys are an error (YAML 1.2 3.2.1.1 requires unique keys, and
 * libyaml does not check): "allow_private: false" then "...: true" must not
 * depend on which one a reader keeps. Sorting keeps hostile input O(n log n). */
static int check_duplicates(struct ctx *c, const struct ynode *map)
{
	size_t nkeys = map->n / 2;
	if (nkeys < 2)
		return 0;
	struct keyref *k = calloc(nkeys, sizeof(*k));
	if (!k)
		return fail_oom(c);
	for (size_t i = 0; i < nkeys; i++)
		k[i] = (struct keyref){ map->items[2 * i]->value, map->items[2 * i]->len, i };
	qsort(k, nkeys, sizeof(*k), keyref_cmp);

	size_t dup = SIZE_MAX, first = 0, run = 0;
	for (size_t i = 1; i < nkeys; i++) {
		if (k[i].len != k[run].len || memcmp(k[i].s, k[run].s, k[i].len) != 0) {
			run = i;
			continue;
		}
		if (k[i].idx < dup) {
			dup = k[i].idx;
			first = k[run].idx;
		}
	}
	free(k);
	if (dup == SIZE_MAX)
		return 0;
	const struct ynode *key = map->items[2 * dup];
	return fail(c, key, "duplicate key \"%s\" (first at line %d)", Q(key->value), map->items[2 * first]->line);
}

static int builder_add(struct ctx *c, struct builder *b, struct ynode *node)
{
	if (b->depth == 0) {
		b->root = node;
		return 0;
	}
	struct ynode *parent = b->stack[b->depth - 1];
	if (parent->type == Y_MAP && parent->n % 2 == 0 && node->type != Y_SCALAR) {
		int r = fail(c, node, "mapping keys must be plain strings");
		ynode_free(node);
		return r;
	}
	if (parent->n == parent->cap) {
		size_t cap = parent->cap ? parent->cap * 2 : 8;
		struct ynode **items = realloc(parent->items, cap * sizeof(*items));
		if (!items) {
			ynode_free(node);
			return fail_oom(c);
		}
		parent->items = items;
		parent->cap = cap;
	}
	parent->items[parent->n++] = node;
	return 0;
}

static int builder_node(struct ctx *c, struct builder *b, const yaml_event_t *ev)
{
	const yaml_char_t *anchor, *tag;
	enum ynode_type type;

	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		type = Y_SCALAR;
		anchor = ev->data.scalar.anchor;
		tag = ev->data.scalar.tag;
		break;
	case YAML_SEQUENCE_START_EVENT:
		type = Y_SEQ;
		anchor = ev->data.sequence_start.anchor;
		tag = ev->data.sequence_start.tag;
		break;
	default:
		type = Y_MAP;
		anchor = ev->data.mapping_start.anchor;
		tag = ev->data.mapping_start.tag;
		break;
	}
	if (anchor)
		return fail_mark(c, ev->start_mark, "anchors are not allowed in a policy");
	if (tag)
		return fail_mark(c, ev->start_mark, "tags are not allowed in a policy");
	if (++c->n_nodes > POLICY_MAX_NODES)
		return fail_mark(c, ev->start_mark, "policy has more than 100000 YAML nodes");
	if (type != Y_SCALAR && b->depth == POLICY_MAX_DEPTH)
		return fail_mark(c, ev->start_mark, "policy nests deeper than 32 levels");

	struct ynode *n = calloc(1, sizeof(*n));
	if (!n)
		return fail_oom(c);
	n->type = type;
	n->line = (int)ev->start_mark.line + 1;
	n->column = (int)ev->start_mark.column + 1;
	if (type == Y_SCALAR) {
		n->len = ev->data.scalar.length;
		n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
		n->value = malloc(n->len + 1);
		if (!n->value) {
			free(n);
			return fail_oom(c);
		}
		memcpy(n->value, ev->data.scalar.value, n->len);
		n->value[n->len] = '\0';
	}
	int r = builder_add(c, b, n);
	if (r < 0)
		return r;
	if (type != Y_SCALAR)
		b->stack[b->depth++] = n;
	return 0;
}

static int builder_event(struct ctx *c, struct builder *b, const yaml_event_t *ev)
{
	switch (ev->type) {
	case YAML_DOCUMENT_START_EVENT:
		if (b->documents++ > 0)
			return fail_mark(c, ev->start_mark,
			                 "a policy is a single YAML document (found a second \"---\")");
		return 0;
	case YAML_ALIAS_EVENT:
		return fail_mark(c, ev->start_mark, "aliases are not allowed in a policy");
	case YAML_SCALAR_EVENT:
	case YAML_SEQUENCE_START_EVENT:
	case YAML_MAPPING_START_EVENT:
		return builder_node(c, b, ev);
	case YAML_SEQUENCE_END_EVENT:
	case YAML_MAPPING_END_EVENT: {
		struct ynode *n = b->stack[--b->depth];
		return n->type == Y_MAP ? check_duplicates(c, n) : 0;
	}
	default:
		return 0;
	}
}

static int fail_yaml(struct ctx *c, const yaml_parser_t *parser)
{
	const char *problem = parser->problem ? parser->problem : "unknown error";

	if (parser->error == YAML_MEMORY_ERROR)
		return fail_oom(c);
	if (parser->error == YAML_READER_ERROR)
		/* check_text has refused what the reader refuses; no mark here */
		return fail_at(c, 0, 0, "invalid YAML: %s", problem);
	/* "host: *.example.com" unquoted is the likeliest way to get here */
	if (parser->context && strstr(parser->context, "alias"))
		return fail_at(c, (int)parser->problem_mark.line + 1, (int)parser->problem_mark.column + 1,
		               "invalid YAML: %s (%s at line %d; a value that starts with '*' "
		               "must be quoted, as in host: \"*.example.com\")",
		               problem, parser->context, (int)parser->context_mark.line + 1);
	if (parser->context)
		return fail_at(c, (int)parser->problem_mark.line + 1, (int)parser->problem_mark.column + 1,
		               "invalid YAML: %s (%s at line %d)", problem, parser->context,
		               (int)parser->context_mark.line + 1);
	return fail_at(c, (int)parser->problem_mark.line + 1, (int)parser->problem_mark.column + 1, "invalid YAML: %s",
	               problem);
}

/* Parses the text into a tree; *ret is NULL for an empty stream. */
static int yaml_to_tree(struct ctx *c, const char *text, size_t len, struct ynode **ret)
{
	struct builder b = { .depth = 0 };
	yaml_parser_t parser;
	bool done = false;
	int r = 0;

	if (!yaml_parser_initialize(&parser))
		return fail_oom(c);
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	/* no BOM sniffing into UTF-16: check_text validated UTF-8 */
	yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
	while (!done && r >= 0) {
		yaml_event_t ev;
		if (!yaml_parser_parse(&parser, &ev)) {
			r = fail_yaml(c, &parser);
			break;
		}
		r = builder_event(c, &b, &ev);
		done = ev.type == YAML_STREAM_END_EVENT;
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	if (r < 0) {
		ynode_free(b.root);
		return r;
	}
	*ret = b.root;
	return 0;
}

/* ---- typed values ---- */

static bool ynode_is_null(const struct ynode *n)
{
	return n->type == Y_SCALAR && n->plain &&
	       (n->len == 0 || streq(n->value, "~") || streq(n->value, "null") || streq(n->value, "Null") ||
	        streq(n->value, "NULL"));
}

static const char *ynode_kind(const struct ynode *n)
{
	if (ynode_is_null(n))
		return "nothing";
	return n->type == Y_MAP ? "a mapping" : n->type == Y_SEQ ? "a sequence" : "a string";
}

/* A string value, borrowed from the tree. */
static int get_string(struct ctx *c, const struct ynode *n, const char *key, const char **ret)
{
	if (n->type != Y_SCALAR || ynode_is_null(n))
		return fail(c, n, "%s: expected a string, found %s", key, ynode_kind(n));
	if (strlen(n->value) != n->len)
		return fail(c, n, "%s: NUL character in string", key);
	*ret = n->value;
	return 0;
}

static int get_nonempty(struct ctx *c, const struct ynode *n, const char *key, const char **ret)
{
	const char *s;
	int r = get_string(c, n, key, &s);
	if (r < 0)
		return r;
	if (!*s)
		return fail(c, n, "%s: is empty", key);
	*ret = s;
	return 0;
}

static int dup_string(struct ctx *c, const char *s, char **ret)
{
	char *d = strdup(s);
	if (!d)
		return fail_oom(c);
	*ret = d;
	return 0;
}

/* Decimal digits only: no sign, no hex, no "1e3", no "1_000". */
static int parse_digits(const char **s, uint64_t *ret)
{
	uint64_t v = 0;
	const char *p = *s;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *p - '0', &v))
			return -ERANGE;
	}
	*s = p;
	*ret = v;
	return 0;
}

static int get_uint(struct ctx *c, const struct ynode *n, const char *key, uint64_t min, uint64_t max, uint64_t *ret)
{
	const char *s;
	uint64_t v = 0;

	if (get_string(c, n, key, &s) < 0 || parse_digits(&s, &v) < 0 || *s || v < min || v > max)
		return fail(c, n, "%s: expected an integer from %llu to %llu", key, (unsigned long long)min,
		            (unsigned long long)max);
	*ret = v;
	return 0;
}

static int get_bool(struct ctx *c, const struct ynode *n, const char *key, bool *ret)
{
	if (n->type == Y_SCALAR && streq(n->value, "true")) {
		*ret = true;
		return 0;
	}
	if (n->type == Y_SCALAR && streq(n->value, "false")) {
		*ret = false;
		return 0;
	}
	return fail(c, n, "%s: expected true or false", key);
}

struct unit {
	const char *name;
	uint64_t factor;
};

static const struct unit size_units[] = {
	{ "", 1 },
	{ "B", 1 },
	{ "KB", 1000 },
	{ "MB", 1000 * 1000 },
	{ "GB", 1000 * 1000 * 1000 },
	{ "KiB", 1024 },
	{ "MiB", 1024 * 1024 },
	{ "GiB", 1024 * 1024 * 1024 },
};

static const struct unit duration_units[] = {
	{ "ms", 1 },
	{ "s", 1000 },
	{ "m", 60 * 1000 },
	{ "h", 60 * 60 * 1000 },
};

static int parse_with_unit(const char *s, const struct unit *units, size_t n_units, uint64_t *ret)
{
	uint64_t v;
	if (parse_digits(&s, &v) < 0)
		return -EINVAL;
	for (size_t i = 0; i < n_units; i++) {
		if (strcaseeq(s, units[i].name)) {
			if (__builtin_mul_overflow(v, units[i].factor, ret))
				return -ERANGE;
			return 0;
		}
	}
	return -EINVAL;
}

/* "10MB" (10^7), "512KiB" (2^19), "65536" (bytes). */
static int get_size(struct ctx *c, const struct ynode *n, const char *key, uint64_t min, uint64_t max, uint64_t *ret)
{
	const char *s;
	uint64_t v;
	int r = get_string(c, n, key, &s);
	if (r < 0)
		return r;
	r = parse_with_unit(s, size_units, ARRAY_SIZE(size_units), &v);
	if (r < 0 || v < min || v > max)
		return fail(c, n,
		            "%s: expected a size from %llu to %llu bytes, such as 65536, "
		            "512KiB or 10MB",
		            key, (unsigned long long)min, (unsigned long long)max);
	*ret = v;
	return 0;
}

/* "500ms", "10s", "2m", "1h"; a bare number is refused (seconds or ms?). */
static int get_duration(struct ctx *c, const struct ynode *n, const char *key, unsigned *ret_ms)
{
	const char *s;
	uint64_t v;
	int r = get_string(c, n, key, &s);
	if (r < 0)
		return r;
	r = parse_with_unit(s, duration_units, ARRAY_SIZE(duration_units), &v);
	if (r < 0 || v < 1 || v > 24 * 60 * 60 * 1000)
		return fail(c, n,
		            "%s: expected a duration from 1ms to 24h with a unit, such as "
		            "500ms, 10s or 2m",
		            key);
	*ret_ms = (unsigned)v;
	return 0;
}

/* [A-Za-z_][A-Za-z0-9_]* (POSIX shell names). */
static bool valid_env_name(const char *s)
{
	if (!*s || (*s >= '0' && *s <= '9'))
		return false;
	for (; *s; s++)
		if (!(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
			return false;
	return true;
}

/* RFC 9110 5.6.2 tchar. */
static bool is_tchar(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool valid_token(const char *s, size_t max)
{
	size_t n = 0;
	for (; s[n]; n++)
		if (!is_tchar(s[n]))
			return false;
	return n > 0 && n <= max;
}

static bool is_unreserved(unsigned char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
	       ch == '.' || ch == '_' || ch == '~';
}

/* ---- mapping walk ---- */

/* Key equality that a NUL inside a quoted key ("host\0x") cannot fool. */
static bool key_is(const struct ynode *k, const char *name)
{
	return k->len == strlen(name) && memcmp(k->value, name, k->len) == 0;
}

/* Looks up each key of `map` in `keys` (NULL-terminated) and stores its
 * value node in found[i]; an unknown key is an error naming `where`. */
static int map_fields(struct ctx *c, const struct ynode *map, const char *const *keys, const struct ynode **found,
                      const struct ynode **found_keys, const char *where)
{
	for (size_t i = 0; i + 1 < map->n; i += 2) {
		const struct ynode *k = map->items[i];
		size_t j = 0;
		while (keys[j] && !key_is(k, keys[j]))
			j++;
		if (!keys[j])
			return fail(c, k, "unknown key \"%s\" in %s", Q(k->value), where);
		found[j] = map->items[i + 1];
		if (found_keys)
			found_keys[j] = k;
	}
	return 0;
}

static int expect_map(struct ctx *c, const struct ynode *n, const char *key)
{
	if (n->type != Y_MAP)
		return fail(c, n, "%s: expected a mapping, found %s", key, ynode_kind(n));
	return 0;
}

/* ---- limits ---- */

enum {
	L_HEADER_BYTES,
	L_HEADERS,
	L_HEADER_TIMEOUT,
	L_IDLE_TIMEOUT,
	L_UPSTREAM_TIMEOUT,
	L_MAX_BODY,
	L_DRAIN_TIMEOUT,
	L_MAX_DECODED,
	L_N
};
static const char *const limit_keys[] = { "max_header_bytes", "max_headers",      "header_timeout",
	                                  "idle_timeout",     "upstream_timeout", "max_body",
	                                  "drain_timeout",    "max_decoded_body", NULL };

static int parse_limits(struct ctx *c, const struct ynode *n, struct policy_limits *l)
{
	const struct ynode *f[L_N] = { 0 };
	uint64_t v;
	int r;

	r = expect_map(c, n, "limits");
	if (r < 0)
		return r;
	r = map_fields(c, n, limit_keys, f, NULL, "limits");
	if (r < 0)
		return r;
	if (f[L_HEADER_BYTES]) {
		r = get_size(c, f[L_HEADER_BYTES], "max_header_bytes", 1024, 1024 * 1024, &v);
		if (r < 0)
			return r;
		l->max_header_bytes = (size_t)v;
	}
	if (f[L_HEADERS]) {
		r = get_uint(c, f[L_HEADERS], "max_headers", 1, 1000, &v);
		if (r < 0)
			return r;
		l->max_headers = (unsigned)v;
	}
	if (f[L_HEADER_TIMEOUT]) {
		r = get_duration(c, f[L_HEADER_TIMEOUT], "header_timeout", &l->header_timeout_ms);
		if (r < 0)
			return r;
	}
	if (f[L_IDLE_TIMEOUT]) {
		r = get_duration(c, f[L_IDLE_TIMEOUT], "idle_timeout", &l->idle_timeout_ms);
		if (r < 0)
			return r;
	}
	if (f[L_UPSTREAM_TIMEOUT]) {
		r = get_duration(c, f[L_UPSTREAM_TIMEOUT], "upstream_timeout", &l->upstream_timeout_ms);
		if (r < 0)
			return r;
	}
	if (f[L_MAX_BODY]) {
		r = get_size(c, f[L_MAX_BODY], "max_body", 0, UINT64_MAX, &l->max_body);
		if (r < 0)
			return r;
	}
	if (f[L_DRAIN_TIMEOUT]) {
		r = get_duration(c, f[L_DRAIN_TIMEOUT], "drain_timeout", &l->drain_timeout_ms);
		if (r < 0)
			return r;
	}
	if (f[L_MAX_DECODED]) {
		r = get_size(c, f[L_MAX_DECODED], "max_decoded_body", 1, UINT64_MAX, &l->max_decoded_body);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- credentials ---- */

static bool valid_cred_name(const char *s)
{
	return name_valid(s, 1, 64);
}

static int parse_from(struct ctx *c, const struct ynode *n, struct policy_credential *cred)
{
	const char *from;
	int r = get_nonempty(c, n, "from", &from);
	if (r < 0)
		return r;

	if (strncmp(from, "env:", 4) == 0) {
		if (!valid_env_name(from + 4))
			return fail(c, n,
			            "from: env: needs a variable name matching "
			            "[A-Za-z_][A-Za-z0-9_]*");
		cred->source = SOURCE_ENV;
		return dup_string(c, from + 4, &cred->source_arg);
	}
	if (strncmp(from, "file:", 5) == 0) {
		if (!from[5])
			return fail(c, n, "from: file: needs a path");
		cred->source = SOURCE_FILE;
		return dup_string(c, from + 5, &cred->source_arg);
	}
	if (strncmp(from, "vault:", 6) == 0) {
		/* The name is not echoed either: see below. */
		if (!vault_name_valid(from + 6))
			return fail(c, n,
			            "from: vault: needs a secret name of 1 to %d characters of "
			            "A-Z a-z 0-9 _ . -",
			            VAULT_NAME_MAX);
		cred->source = SOURCE_VAULT;
		return dup_string(c, from + 6, &cred->source_arg);
	}
	if (strncmp(from, "exec:", 5) == 0) {
		/* Run by /bin/sh -c; a NUL was refused by get_string. */
		if (!from[5] || strlen(from + 5) > POLICY_EXEC_MAX)
			return fail(c, n, "from: exec: needs a command of 1 to %d bytes", POLICY_EXEC_MAX);
		cred->source = SOURCE_EXEC;
		return dup_string(c, from + 5, &cred->source_arg);
	}
	/* The value is not echoed: it may be a secret pasted in the wrong place. */
	return fail(c, n,
	            "from: unknown credential source (expected env:VAR, file:PATH, vault:NAME or "
	            "exec:COMMAND)");
}

const char *policy_source_name(enum cred_source s)
{
	switch (s) {
	case SOURCE_ENV:
		return "env";
	case SOURCE_FILE:
		return "file";
	case SOURCE_VAULT:
		return "vault";
	case SOURCE_EXEC:
		return "exec";
	case SOURCE_PARTS:
		return "parts";
	}
	return "?";
}

/* Printable ASCII without space, quotes or backslash: it must survive
 * shells, JSON, headers and URLs unchanged, and be found by a byte search. */
static int check_placeholder(struct ctx *c, const struct ynode *n, const char *s)
{
	size_t len = strlen(s);
	if (len < PLACEHOLDER_MIN || len > PLACEHOLDER_MAX)
		return fail(c, n, "placeholder: must be %d to %d characters long", PLACEHOLDER_MIN, PLACEHOLDER_MAX);
	for (const char *p = s; *p; p++)
		if (*p < 0x21 || *p > 0x7e || *p == '"' || *p == '\'' || *p == '\\')
			return fail(c, n,
			            "placeholder: only printable ASCII without spaces, quotes or "
			            "backslashes");
	return 0;
}

/* The kinds of credential: the parts each is made of and whether this
 * version serves it. A kind that is not served is refused when the policy
 * is loaded, never accepted and then ignored. */
struct kind_info {
	const char *name;
	bool supported;
	/* keyward mints the value the route attaches (a token): the
	 * credential itself has env: and placeholder: for it */
	bool minted;
	const char *parts[CRED_MAX_PARTS]; /* part keys, by index (policy.h) */
	unsigned required;                 /* bit i: parts[i] must be given */
	unsigned mint_keys;                /* bit i: mint_keys[i] is allowed */
};

/* The non-secret keys of the kinds whose token keyward mints. */
enum {
	MK_TOKEN_URL,
	MK_SCOPES,
	MK_AUDIENCE,
	MK_CLIENT_AUTH,
	MK_APP_ID,
	MK_INSTALLATION_ID,
	MK_REPOSITORIES,
	MK_PERMISSIONS,
	MK_API_URL,
	MK_UPSTREAM_CA,
	MK_ALLOW_PRIVATE,
	MK_N
};
static const char *const mint_keys[MK_N] = { "token_url", "scopes",          "audience",     "client_auth",
	                                     "app_id",    "installation_id", "repositories", "permissions",
	                                     "api_url",   "upstream_ca",     "allow_private" };
#define MINT_OAUTH2                                                                                   \
	((1u << MK_TOKEN_URL) | (1u << MK_SCOPES) | (1u << MK_CLIENT_AUTH) | (1u << MK_UPSTREAM_CA) | \
	 (1u << MK_ALLOW_PRIVATE))
#define MINT_GITHUB                                                                                          \
	((1u << MK_APP_ID) | (1u << MK_INSTALLATION_ID) | (1u << MK_REPOSITORIES) | (1u << MK_PERMISSIONS) | \
	 (1u << MK_API_URL) | (1u << MK_UPSTREAM_CA) | (1u << MK_ALLOW_PRIVATE))

static const struct kind_info kinds[] = {
	[CRED_SECRET] = { "secret", true, false, { NULL }, 0, 0 },
	[CRED_AWS] = { "aws", true, false, { "access_key_id", "secret_access_key", "session_token" }, 0x3, 0 },
	[CRED_OAUTH2_CLIENT] = { "oauth2_client_credentials",
	                         true,
	                         true,
	                         { "client_id", "client_secret" },
	                         0x3,
	                         MINT_OAUTH2 | (1u << MK_AUDIENCE) },
	[CRED_OAUTH2_REFRESH] = { "oauth2_refresh",
	                          true,
	                          true,
	                          { "client_id", "client_secret", "refresh_token" },
	                          0x4,
	                          MINT_OAUTH2 },
	[CRED_GITHUB_APP] = { "github_app", true, true, { "private_key" }, 0x1, MINT_GITHUB },
};

const char *policy_kind_name(enum cred_kind k)
{
	return (size_t)k < ARRAY_SIZE(kinds) ? kinds[k].name : "?";
}

/* "secret, aws": the kinds this version serves, for messages. */
static void supported_kinds(char *out, size_t len)
{
	size_t o = 0;
	out[0] = 0;
	for (size_t i = 0; i < ARRAY_SIZE(kinds) && o < len; i++)
		if (kinds[i].supported)
			o += (size_t)snprintf(out + o, len - o, "%s%s", o ? ", " : "", kinds[i].name);
}

static int parse_kind(struct ctx *c, const struct ynode *n, const char *cred, enum cred_kind *ret)
{
	const char *kind;
	char list[200];
	int r = get_string(c, n, "kind", &kind);
	if (r < 0)
		return r;
	supported_kinds(list, sizeof(list));
	for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
		if (!streq(kind, kinds[i].name))
			continue;
		if (!kinds[i].supported)
			return fail(c, n,
			            "credential \"%s\": kind %s is not supported yet in this version (supported: %s)",
			            cred, kind, list);
		*ret = (enum cred_kind)i;
		return 0;
	}
	return fail(c, n, "credential \"%s\": unknown kind \"%s\" (expected %s)", cred, Q(kind), list);
}

static int parse_env_key(struct ctx *c, const struct ynode *n, char **ret)
{
	const char *env;
	int r = get_nonempty(c, n, "env", &env);
	if (r < 0)
		return r;
	if (!valid_env_name(env))
		return fail(c, n, "env: invalid variable name \"%s\" (expected [A-Za-z_][A-Za-z0-9_]*)", Q(env));
	return dup_string(c, env, ret);
}

/* placeholder: as configured, else derived from the (part's) full name.
 * *ret_ph_node is where a clash with another placeholder is reported. */
static int parse_placeholder_key(struct ctx *c, const struct ynode *n, const struct ynode *name_node,
                                 struct policy_credential *cred, const struct ynode **ret_ph_node)
{
	if (n) {
		const char *ph;
		int r = get_string(c, n, "placeholder", &ph);
		if (r < 0)
			return r;
		r = check_placeholder(c, n, ph);
		if (r < 0)
			return r;
		*ret_ph_node = n;
		return dup_string(c, ph, &cred->placeholder);
	}
	char ph[3 + 64 + 1 + 24 + 1];
	if (policy_derive_placeholder(cred->name, ph, sizeof(ph)) < 0)
		return fail_oom(c);
	*ret_ph_node = name_node;
	return dup_string(c, ph, &cred->placeholder);
}

static int parse_quota(struct ctx *c, const struct ynode *rate, const struct ynode *burst, const struct ynode *hours,
                       const struct ynode *tz, struct policy_quota *q);

enum { SK_FROM, SK_ENV, SK_PLACEHOLDER, SK_KIND, SK_RATE, SK_BURST, SK_HOURS, SK_TIMEZONE, SK_N };
static const char *const secret_keys[] = { "from",  "env",   "placeholder", "kind", "rate",
	                                   "burst", "hours", "timezone",    NULL };

/* A secret credential, or one part of another kind: from:, env:, placeholder:. */
static int parse_secret(struct ctx *c, const struct ynode *name_node, const struct ynode *val,
                        struct policy_credential *cred, const struct ynode **ret_ph_node)
{
	const struct ynode *f[SK_N] = { 0 };
	char where[160];
	int r;

	if (val->type != Y_MAP)
		return fail(c, val, "credential \"%s\": expected a mapping with from:, found %s", cred->name,
		            ynode_kind(val));
	snprintf(where, sizeof(where), "credential \"%s\"", cred->name);
	/* a part has no kind: of its own */
	r = map_fields(c, val, cred->parent ? (const char *const[]){ "from", "env", "placeholder", NULL } : secret_keys,
	               f, NULL, where);
	if (r < 0)
		return r;
	if (!f[SK_FROM])
		return fail(c, val, "credential \"%s\" has no from: (env:VAR, file:PATH, vault:NAME or exec:COMMAND)",
		            cred->name);
	r = parse_from(c, f[SK_FROM], cred);
	if (r >= 0 && f[SK_ENV])
		r = parse_env_key(c, f[SK_ENV], &cred->env);
	if (r >= 0)
		r = parse_quota(c, f[SK_RATE], f[SK_BURST], f[SK_HOURS], f[SK_TIMEZONE], &cred->quota);
	if (r < 0)
		return r;
	return parse_placeholder_key(c, f[SK_PLACEHOLDER], name_node, cred, ret_ph_node);
}

/* The next free entry of p->creds (parse_credentials sized it), named. */
static struct policy_credential *new_entry(struct ctx *c, struct policy *p, const char *name, const char *part,
                                           const struct ynode *at)
{
	struct policy_credential *e = &p->creds[p->n_creds++]; /* policy_free frees a half-filled entry */
	if (asprintf(&e->name, "%s%s%s", name, part ? "." : "", part ? part : "") < 0) {
		e->name = NULL;
		fail_oom(c);
		return NULL;
	}
	e->line = at->line;
	e->column = at->column;
	return e;
}

static int parse_mint(struct ctx *c, const struct ynode *val, struct policy_credential *cred,
                      const struct ynode *const *f);

/* A credential of several parts: kind:, its parts, and for a kind whose
 * value keyward mints, env: and placeholder: for that value. The parts are
 * added to p->creds right after the credential. */
static int parse_parts(struct ctx *c, struct policy *p, const struct ynode *key, const struct ynode *val,
                       struct policy_credential *cred, const struct ynode **ph_nodes)
{
	const struct kind_info *k = &kinds[cred->kind];
	const char *keys[CRED_MAX_PARTS + 8 + MK_N];
	const struct ynode *f[CRED_MAX_PARTS + 8 + MK_N] = { 0 };
	const struct ynode *mf[MK_N] = { 0 };
	size_t nk = 0, i_env = SIZE_MAX, i_ph = SIZE_MAX, i_mint = 0, i_quota;
	char where[160];
	int r;

	keys[nk++] = "kind";
	for (size_t i = 0; i < CRED_MAX_PARTS && k->parts[i]; i++)
		keys[nk++] = k->parts[i];
	if (k->minted) {
		i_env = nk, keys[nk++] = "env";
		i_ph = nk, keys[nk++] = "placeholder";
	}
	i_quota = nk;
	keys[nk++] = "rate", keys[nk++] = "burst", keys[nk++] = "hours", keys[nk++] = "timezone";
	i_mint = nk;
	for (size_t i = 0; i < MK_N; i++)
		if (k->mint_keys & (1u << i))
			keys[nk++] = mint_keys[i];
	keys[nk] = NULL;
	snprintf(where, sizeof(where), "credential \"%s\" (kind %s)", cred->name, k->name);
	r = map_fields(c, val, keys, f, NULL, where);
	if (r < 0)
		return r;

	cred->source = SOURCE_PARTS;
	if (i_env != SIZE_MAX && f[i_env]) {
		r = parse_env_key(c, f[i_env], &cred->env);
		if (r < 0)
			return r;
	}
	r = parse_placeholder_key(c, i_ph != SIZE_MAX ? f[i_ph] : NULL, key, cred, &ph_nodes[cred - p->creds]);
	if (r >= 0)
		r = parse_quota(c, f[i_quota], f[i_quota + 1], f[i_quota + 2], f[i_quota + 3], &cred->quota);
	if (r < 0)
		return r;

	for (size_t i = 0; i < CRED_MAX_PARTS && k->parts[i]; i++) {
		const struct ynode *pv = f[1 + i];
		if (!pv) {
			if (k->required & (1u << i))
				return fail(c, val, "credential \"%s\" (kind %s) needs %s: {from: ...}", cred->name,
				            k->name, k->parts[i]);
			continue;
		}
		struct policy_credential *part = new_entry(c, p, cred->name, k->parts[i], pv);
		if (!part)
			return -ENOMEM;
		part->parent = cred;
		cred->parts[i] = part;
		r = parse_secret(c, key, pv, part, &ph_nodes[part - p->creds]);
		if (r < 0)
			return r;
	}
	if (!k->minted)
		return 0;
	for (size_t i = 0, j = i_mint; i < MK_N; i++)
		if (k->mint_keys & (1u << i))
			mf[i] = f[j++];
	return parse_mint(c, val, cred, mf);
}

static int parse_credential(struct ctx *c, struct policy *p, const struct ynode *key, const struct ynode *val,
                            const struct ynode **ph_nodes)
{
	if (!valid_cred_name(key->value))
		return fail(c, key, "invalid credential name \"%s\" (1 to 64 of A-Z a-z 0-9 _ . -)", Q(key->value));
	struct policy_credential *cred = new_entry(c, p, key->value, NULL, key);
	if (!cred)
		return -ENOMEM;
	if (val->type != Y_MAP)
		return fail(c, val, "credential \"%s\": expected a mapping with from:, found %s", cred->name,
		            ynode_kind(val));

	/* kind first: the other keys depend on it */
	for (size_t i = 0; i + 1 < val->n; i += 2)
		if (key_is(val->items[i], "kind")) {
			int r = parse_kind(c, val->items[i + 1], cred->name, &cred->kind);
			if (r < 0)
				return r;
		}
	if (cred->kind != CRED_SECRET)
		return parse_parts(c, p, key, val, cred, ph_nodes);
	return parse_secret(c, key, val, cred, &ph_nodes[cred - p->creds]);
}

/* The proxy finds placeholders by byte search: one that contains another
 * would be swapped for the wrong secret, or half-swapped. */
static int check_credentials_apart(struct ctx *c, const struct policy *p, const struct ynode *const *ph_nodes)
{
	for (size_t j = 1; j < p->n_creds; j++) {
		const struct policy_credential *b = &p->creds[j];
		for (size_t i = 0; i < j; i++) {
			const struct policy_credential *a = &p->creds[i];
			if (streq(a->name, b->name))
				return fail_at(c, b->line, b->column, "two credentials are named \"%s\"", a->name);
			if (streq(a->placeholder, b->placeholder))
				return fail(c, ph_nodes[j], "credentials \"%s\" and \"%s\" have the same placeholder",
				            a->name, b->name);
			if (strstr(a->placeholder, b->placeholder))
				return fail(c, ph_nodes[j],
				            "the placeholder of credential \"%s\" is part of the "
				            "placeholder of credential \"%s\"",
				            b->name, a->name);
			if (strstr(b->placeholder, a->placeholder))
				return fail(c, ph_nodes[j],
				            "the placeholder of credential \"%s\" is part of the "
				            "placeholder of credential \"%s\"",
				            a->name, b->name);
			if (a->env && b->env && streq(a->env, b->env))
				return fail_at(c, b->line, b->column, "credentials \"%s\" and \"%s\" both set env: %s",
				               a->name, b->name, a->env);
		}
	}
	return 0;
}

static int parse_credentials(struct ctx *c, const struct ynode *n, struct policy *p)
{
	int r = expect_map(c, n, "credentials");
	if (r < 0)
		return r;
	size_t count = n->n / 2;
	if (count > POLICY_MAX_CREDS)
		return fail(c, n, "credentials: more than %d credentials", POLICY_MAX_CREDS);
	if (count == 0)
		return 0;
	/* room for every credential and every part it may have */
	size_t cap = count * (1 + CRED_MAX_PARTS);
	p->creds = calloc(cap, sizeof(*p->creds));
	const struct ynode **ph_nodes = calloc(cap, sizeof(*ph_nodes));
	if (!p->creds || !ph_nodes) {
		free(ph_nodes);
		return fail_oom(c);
	}
	for (size_t i = 0; i < count && r >= 0; i++)
		r = parse_credential(c, p, n->items[2 * i], n->items[2 * i + 1], ph_nodes);
	if (r >= 0)
		r = check_credentials_apart(c, p, ph_nodes);
	free(ph_nodes);
	return r;
}

/* ---- routes: host ---- */

/* Addresses the proxy refuses to dial unless a route allows it; a route
 * that names one as its host allows it. This mirrors the list of
 * src/proxy/addr.c (loopback, private, CGNAT, link-local, documentation,
 * benchmarking, multicast, reserved...) so that any literal the proxy
 * would refuse is reachable when a route spells it out. */
static bool ipv4_is_private(const unsigned char a[4])
{
	static const struct {
		unsigned char net[4];
		unsigned bits;
	} ranges[] = {
		{ { 0, 0, 0, 0 }, 8 },     { { 10, 0, 0, 0 }, 8 },      { { 100, 64, 0, 0 }, 10 },
		{ { 127, 0, 0, 0 }, 8 },   { { 169, 254, 0, 0 }, 16 },  { { 172, 16, 0, 0 }, 12 },
		{ { 192, 0, 0, 0 }, 24 },  { { 192, 0, 2, 0 }, 24 },    { { 192, 168, 0, 0 }, 16 },
		{ { 198, 18, 0, 0 }, 15 }, { { 198, 51, 100, 0 }, 24 }, { { 203, 0, 113, 0 }, 24 },
		{ { 224, 0, 0, 0 }, 4 },   { { 240, 0, 0, 0 }, 4 },
	};
	uint32_t v = (uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 | (uint32_t)a[2] << 8 | a[3];
	for (size_t i = 0; i < ARRAY_SIZE(ranges); i++) {
		const unsigned char *n = ranges[i].net;
		uint32_t net = (uint32_t)n[0] << 24 | (uint32_t)n[1] << 16 | (uint32_t)n[2] << 8 | n[3];
		uint32_t mask = ~UINT32_C(0) << (32 - ranges[i].bits);
		if ((v & mask) == net)
			return true;
	}
	return false;
}

static bool ipv6_is_private(const struct in6_addr *a)
{
	static const unsigned char zero[16];
	static const unsigned char v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	static const unsigned char nat64[12] = { 0x00, 0x64, 0xff, 0x9b };
	static const unsigned char nat64_local[6] = { 0x00, 0x64, 0xff, 0x9b, 0x00, 0x01 };
	const unsigned char *b = a->s6_addr;

	/* ::, ::1, and forms that carry an IPv4 address: judged by it */
	if (memcmp(b, zero, 15) == 0 && b[15] <= 1)
		return true;
	if (memcmp(b, v4mapped, 12) == 0 || memcmp(b, nat64, 12) == 0 || memcmp(b, zero, 12) == 0)
		return ipv4_is_private(b + 12);
	if (b[0] == 0x20 && b[1] == 0x02) /* 6to4 */
		return ipv4_is_private(b + 2);
	if (memcmp(b, nat64_local, 6) == 0) /* 64:ff9b:1::/48, RFC 8215 */
		return true;
	return (b[0] & 0xfe) == 0xfc ||                                          /* fc00::/7 unique local */
	       (b[0] == 0xfe && (b[1] & 0x80) == 0x80) ||                        /* fe80::/10, fec0::/10 */
	       b[0] == 0xff ||                                                   /* multicast */
	       (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) || /* doc */
	       (b[0] == 0x01 && memcmp(b + 1, zero, 7) == 0);                    /* 100::/64 discard */
}

bool policy_host_is_localhost(const char *h)
{
	size_t n = strlen(h);
	/* RFC 6761 6.3: localhost and every name under it are loopback */
	return streq(h, "localhost") || (n >= 10 && streq(h + n - 10, ".localhost"));
}

static int parse_host_ipv6(struct ctx *c, const struct ynode *n, const char *h, struct policy_route *route)
{
	size_t len = strlen(h);
	char inner[INET6_ADDRSTRLEN];
	struct in6_addr a;

	if (h[len - 1] != ']' || len - 2 >= sizeof(inner))
		return fail(c, n, "host: invalid IPv6 literal \"%s\"", Q(h));
	memcpy(inner, h + 1, len - 2);
	inner[len - 2] = '\0';
	if (inet_pton(AF_INET6, inner, &a) != 1)
		return fail(c, n, "host: invalid IPv6 literal \"%s\"", Q(h));
	if (!inet_ntop(AF_INET6, &a, inner, sizeof(inner)))
		return fail_oom(c);
	route->allow_private = ipv6_is_private(&a);
	return dup_string(c, inner, &route->host);
}

/* DNS name labels: [a-z0-9-], 1 to 63 each (RFC 1035 2.3.4). */
static int check_labels(struct ctx *c, const struct ynode *n, const char *orig, const char *h)
{
	size_t label = 0;
	for (const char *p = h;; p++) {
		if (*p == '.' || !*p) {
			if (label == 0)
				return fail(c, n, "host: empty label in \"%s\"", Q(orig));
			if (label > 63)
				return fail(c, n, "host: label longer than 63 characters in \"%s\"", Q(orig));
			if (!*p)
				return 0;
			label = 0;
			continue;
		}
		if (*p == '*')
			return fail(c, n,
			            "host: '*' is allowed only as the whole first label, as in "
			            "*.example.com");
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
			return fail(c, n, "host: invalid character '%c' in \"%s\" (allowed: a-z 0-9 . -)",
			            (*p > 0x20 && *p < 0x7f) ? *p : '?', Q(orig));
		label++;
	}
}

static int parse_host(struct ctx *c, const struct ynode *n, struct policy_route *route)
{
	char h[HOST_MAX + 3];
	const char *orig;
	int r = get_nonempty(c, n, "host", &orig);
	if (r < 0)
		return r;
	size_t len = strlen(orig);
	if (len > HOST_MAX + 1)
		return fail(c, n, "host: longer than %d characters", HOST_MAX);
	for (size_t i = 0; i <= len; i++)
		h[i] = (orig[i] >= 'A' && orig[i] <= 'Z') ? (char)(orig[i] - 'A' + 'a') : orig[i];
	if (len > 1 && h[len - 1] == '.' && h[len - 2] != '.')
		h[--len] = '\0'; /* "example.com." is the same (absolute) name */

	if (strstr(h, "://"))
		return fail(c, n, "host: expected a host name, not a URL");
	if (h[0] == '[')
		return parse_host_ipv6(c, n, h, route);
	if (strchr(h, ':')) {
		struct in6_addr a;
		if (inet_pton(AF_INET6, h, &a) == 1)
			return fail(c, n, "host: write an IPv6 address in brackets, as in [::1]");
		return fail(c, n, "host: must not contain a port; use port:");
	}
	if (streq(h, "*"))
		return fail(c, n, "host: \"*\" alone would allow every host; name them");

	const char *name = h;
	if (h[0] == '*') {
		if (h[1] != '.')
			return fail(c, n,
			            "host: '*' is allowed only as the whole first label, as in "
			            "*.example.com");
		route->wildcard = true;
		name = h + 2;
	}
	r = check_labels(c, n, orig, name);
	if (r < 0)
		return r;

	/* A numeric last label makes the whole name an IPv4 address to many
	 * resolvers ("1.2.3", "0x7f.1"): only dotted-quad is accepted. */
	const char *last = strrchr(name, '.');
	last = last ? last + 1 : name;
	if (strspn(last, "0123456789") == strlen(last)) {
		unsigned char a[4];
		if (route->wildcard)
			return fail(c, n, "host: a wildcard needs a domain name, not an address");
		if (inet_pton(AF_INET, name, a) != 1)
			return fail(c, n, "host: invalid IPv4 address \"%s\"", Q(orig));
		route->allow_private = ipv4_is_private(a);
	} else {
		route->allow_private = policy_host_is_localhost(name);
	}
	/* a wildcard is stored as its suffix with the dot: ".example.com" */
	return dup_string(c, route->wildcard ? h + 1 : h, &route->host);
}

/* ---- routes: methods and paths ---- */

static int parse_methods(struct ctx *c, const struct ynode *n, struct policy_route *route)
{
	if (n->type != Y_SEQ)
		return fail(c, n, "methods: expected a sequence such as [GET, POST], found %s", ynode_kind(n));
	if (n->n == 0)
		return fail(c, n, "methods: is empty; leave it out to allow every method");
	if (n->n > ROUTE_MAX_METHODS)
		return fail(c, n, "methods: more than %d methods", ROUTE_MAX_METHODS);
	route->methods = calloc(n->n + 1, sizeof(char *));
	if (!route->methods)
		return fail_oom(c);
	for (size_t i = 0; i < n->n; i++) {
		const struct ynode *item = n->items[i];
		const char *m;
		int r = get_nonempty(c, item, "methods", &m);
		if (r < 0)
			return r;
		if (!valid_token(m, 32))
			return fail(c, item, "methods: \"%s\" is not an HTTP method", Q(m));
		r = dup_string(c, m, &route->methods[i]);
		if (r < 0)
			return r;
		for (char *p = route->methods[i]; *p; p++)
			if (*p >= 'a' && *p <= 'z')
				*p = (char)(*p - 'a' + 'A');
		const char *up = route->methods[i];
		if (streq(up, "CONNECT"))
			return fail(c, item,
			            "methods: CONNECT is not allowed (the proxy answers CONNECT "
			            "itself, by host and port)");
		if (streq(up, "TRACE"))
			return fail(c, item,
			            "methods: TRACE is not allowed (it echoes the request, "
			            "injected credentials included)");
		for (size_t j = 0; j < i; j++)
			if (streq(route->methods[j], up))
				return fail(c, item, "methods: %s is listed twice", up);
	}
	return 0;
}

/* Globs are matched against normalised paths (path.h), so a glob that no
 * normalised path can contain is an error, not a rule that silently never
 * matches. Escapes are normalised the same way as paths: "%7e" -> "~",
 * "%2f" -> "%2F". */
static int parse_glob(struct ctx *c, const struct ynode *n, char **ret)
{
	static const char hex[] = "0123456789ABCDEF";
	const char *g;
	int r = get_nonempty(c, n, "paths", &g);
	if (r < 0)
		return r;
	size_t len = strlen(g);
	if (len > GLOB_MAX)
		return fail(c, n, "paths: glob longer than %d characters", GLOB_MAX);
	if (g[0] != '/')
		return fail(c, n, "paths: glob \"%s\" must start with '/'", Q(g));

	_cleanup_free_ char *out = malloc(len + 1);
	if (!out)
		return fail_oom(c);
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)g[i];
		if (ch == '?' || ch == '#')
			return fail(c, n,
			            "paths: glob \"%s\" contains '%c'; globs match the path only, "
			            "never a query or fragment",
			            Q(g), ch);
		if (ch < 0x21 || ch >= 0x7f)
			return fail(c, n,
			            "paths: glob \"%s\" contains a space, control or non-ASCII "
			            "character; write it percent-encoded",
			            Q(g));
		if (ch != '%') {
			out[o++] = (char)ch;
			continue;
		}
		int hi = i + 2 < len ? hex_value(g[i + 1]) : -1;
		int lo = i + 2 < len ? hex_value(g[i + 2]) : -1;
		if (hi < 0 || lo < 0)
			return fail(c, n, "paths: glob \"%s\" has a malformed %%-escape", Q(g));
		unsigned v = (unsigned)(hi << 4 | lo);
		if (is_unreserved((unsigned char)v)) {
			out[o++] = (char)v;
		} else {
			out[o++] = '%';
			out[o++] = hex[v >> 4];
			out[o++] = hex[v & 15];
		}
		i += 2;
	}
	out[o] = '\0';

	if (strstr(out, "//"))
		return fail(c, n,
		            "paths: glob \"%s\" contains \"//\", which a normalised path never "
		            "contains",
		            Q(g));
	for (const char *s = out; (s = strchr(s, '/')); s++) {
		size_t seg = strcspn(s + 1, "/");
		if ((seg == 1 && s[1] == '.') || (seg == 2 && s[1] == '.' && s[2] == '.'))
			return fail(c, n,
			            "paths: glob \"%s\" contains a \".\" or \"..\" segment, which a "
			            "normalised path never contains",
			            Q(g));
	}
	*ret = TAKE_PTR(out);
	return 0;
}

static int parse_paths(struct ctx *c, const struct ynode *n, struct policy_route *route)
{
	if (n->type != Y_SEQ)
		return fail(c, n, "paths: expected a sequence such as [\"/repos/**\"], found %s", ynode_kind(n));
	if (n->n == 0)
		return fail(c, n, "paths: is empty; leave it out to allow every path");
	if (n->n > ROUTE_MAX_PATHS)
		return fail(c, n, "paths: more than %d globs", ROUTE_MAX_PATHS);
	route->paths = calloc(n->n + 1, sizeof(char *));
	if (!route->paths)
		return fail_oom(c);
	for (size_t i = 0; i < n->n; i++) {
		int r = parse_glob(c, n->items[i], &route->paths[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- routes: credential and inject ---- */

static int find_route_credential(struct ctx *c, const struct ynode *n, struct policy *p, struct policy_route *route)
{
	const char *name;
	int r = get_nonempty(c, n, "credential", &name);
	if (r < 0)
		return r;
	for (size_t i = 0; i < p->n_creds; i++)
		if (!p->creds[i].parent && streq(p->creds[i].name, name)) {
			route->credential = &p->creds[i];
			return 0;
		}
	if (p->n_creds == 0)
		return fail(c, n, "unknown credential \"%s\" (no credentials are defined)", Q(name));

	char list[200];
	size_t o = 0;
	for (size_t i = 0; i < p->n_creds; i++) {
		if (p->creds[i].parent)
			continue;
		int w = snprintf(list + o, sizeof(list) - o, "%s%s", o ? ", " : "", p->creds[i].name);
		if (w < 0 || (size_t)w >= sizeof(list) - o) {
			/* keep "..." in bounds: cut back far enough for it */
			o = o < sizeof(list) - 6 ? o : sizeof(list) - 6;
			memcpy(list + o, ", ...", 6);
			break;
		}
		o += (size_t)w;
	}
	return fail(c, n, "unknown credential \"%s\" (defined: %s)", Q(name), list);
}

/* Framing and hop-by-hop headers (RFC 9110 7.6.1, RFC 9112 6): injecting
 * one would change how the request is delimited or routed. */
static bool header_is_forbidden(const char *name)
{
	static const char *const forbidden[] = {
		"host",
		"content-length",
		"transfer-encoding",
		"connection",
		"keep-alive",
		"proxy-connection",
		"proxy-authorization",
		"te",
		"trailer",
		"upgrade",
		"expect",
	};
	for (size_t i = 0; i < ARRAY_SIZE(forbidden); i++)
		if (strcaseeq(name, forbidden[i]))
			return true;
	return false;
}

static int parse_inject_header(struct ctx *c, const struct ynode *name_node, const struct ynode *value_node,
                               struct policy_route *route)
{
	const char *name, *value = "{secret}";
	int r = get_nonempty(c, name_node, "inject: header", &name);
	if (r < 0)
		return r;
	if (!valid_token(name, 64))
		return fail(c, name_node, "inject: header: \"%s\" is not a valid header name", Q(name));
	if (header_is_forbidden(name))
		return fail(c, name_node,
		            "inject: header: %s cannot be injected (it frames or routes the "
		            "request)",
		            name);
	if (value_node) {
		r = get_nonempty(c, value_node, "inject: value", &value);
		if (r < 0)
			return r;
		if (strlen(value) > 1024)
			return fail(c, value_node, "inject: value: longer than 1024 characters");
		for (const char *p = value; *p; p++)
			if ((*p < 0x20 && *p != '\t') || *p > 0x7e)
				return fail(c, value_node,
				            "inject: value: only printable ASCII, spaces and tabs "
				            "(RFC 9110 5.5)");
		if (!strstr(value, "{secret}"))
			return fail(c, value_node, "inject: value: must contain {secret}");
	}
	route->inject = INJECT_HEADER;
	r = dup_string(c, name, &route->inject_header);
	if (r < 0)
		return r;
	return dup_string(c, value, &route->inject_value);
}

enum { I_BASIC, I_HEADER, I_VALUE, I_QUERY, I_N };
static const char *const inject_keys[] = { "basic", "header", "value", "query", NULL };

static int parse_inject_map(struct ctx *c, const struct ynode *n, struct policy_route *route)
{
	const struct ynode *f[I_N] = { 0 }, *k[I_N] = { 0 };
	const struct ynode *mode = NULL;

	for (size_t i = 0; i + 1 < n->n; i += 2) {
		const struct ynode *key = n->items[i];
		size_t j = 0;
		while (inject_keys[j] && !key_is(key, inject_keys[j]))
			j++;
		if (!inject_keys[j])
			return fail(c, key, "unknown inject mode \"%s\" %s", Q(key->value), inject_expected);
		f[j] = n->items[i + 1];
		k[j] = key;
		if (j == I_VALUE)
			continue;
		if (mode)
			return fail(c, key, "inject: %s and %s cannot be combined; choose one", mode->value,
			            key->value);
		mode = key;
	}
	if (!mode) {
		if (f[I_VALUE])
			return fail(c, k[I_VALUE], "inject: value: needs header:");
		return fail(c, n, "inject: empty mapping %s", inject_expected);
	}
	if (f[I_VALUE] && !f[I_HEADER])
		return fail(c, k[I_VALUE], "inject: value: goes only with header:");

	if (f[I_HEADER])
		return parse_inject_header(c, f[I_HEADER], f[I_VALUE], route);
	if (f[I_QUERY]) {
		const char *q;
		int r = get_nonempty(c, f[I_QUERY], "inject: query", &q);
		if (r < 0)
			return r;
		size_t len = strlen(q);
		for (size_t i = 0; i < len; i++)
			if (!is_unreserved((unsigned char)q[i]))
				return fail(c, f[I_QUERY],
				            "inject: query: parameter name must be letters, digits "
				            "and - . _ ~");
		if (len > 128)
			return fail(c, f[I_QUERY], "inject: query: longer than 128 characters");
		route->inject = INJECT_QUERY;
		return dup_string(c, q, &route->inject_query);
	}
	/* basic: USER; RFC 7617 2: a user-id containing ':' cannot be encoded */
	const char *user;
	int r = get_nonempty(c, f[I_BASIC], "inject: basic", &user);
	if (r < 0)
		return r;
	if (strlen(user) > 256)
		return fail(c, f[I_BASIC], "inject: basic: longer than 256 characters");
	for (const char *p = user; *p; p++) {
		if (*p == ':')
			return fail(c, f[I_BASIC], "inject: basic: a user name cannot contain ':'");
		if (*p < 0x20 || *p > 0x7e)
			return fail(c, f[I_BASIC], "inject: basic: only printable ASCII");
	}
	route->inject = INJECT_BASIC;
	return dup_string(c, user, &route->inject_user);
}

static int parse_inject(struct ctx *c, const struct ynode *n, struct policy_route *route)
{
	if (n->type == Y_MAP)
		return parse_inject_map(c, n, route);
	if (n->type == Y_SEQ || ynode_is_null(n))
		return fail(c, n, "inject: found %s %s", ynode_kind(n), inject_expected);
	if (streq(n->value, "bearer"))
		route->inject = INJECT_BEARER;
	else if (streq(n->value, "basic"))
		route->inject = INJECT_BASIC;
	else if (streq(n->value, "swap"))
		route->inject = INJECT_SWAP;
	else if (streq(n->value, "sigv4"))
		route->inject = INJECT_SIGV4;
	else
		return fail(c, n, "unknown inject mode \"%s\" %s", Q(n->value), inject_expected);
	return 0;
}

/* ---- rate and time limits ---- */

/* "60/minute": COUNT/UNIT with unit second, minute or hour. */
static int parse_rate(struct ctx *c, const struct ynode *n, struct policy_quota *q)
{
	static const struct unit periods[] = { { "second", 1 }, { "minute", 60 }, { "hour", 3600 } };
	const char *s;
	uint64_t v;
	int r = get_string(c, n, "rate", &s);
	if (r < 0)
		return r;
	const char *slash = strchr(s, '/');
	if (parse_digits(&s, &v) < 0 || s != slash || v < 1 || v > 1000000000)
		goto bad;
	for (size_t i = 0; i < ARRAY_SIZE(periods); i++) {
		if (streq(slash + 1, periods[i].name)) {
			q->rate_count = v;
			q->rate_period_s = periods[i].factor;
			return 0;
		}
	}
bad:
	return fail(c, n,
	            "rate: expected COUNT/UNIT with a count from 1 to 1000000000 and unit second, minute or "
	            "hour, such as 60/minute");
}

/* "Mon", "mon": 0 for Monday ... 6 for Sunday, or -1. */
static int day_index(const char *s, size_t n)
{
	static const char *const days[] = { "mon", "tue", "wed", "thu", "fri", "sat", "sun" };
	for (int i = 0; i < 7; i++)
		if (n == 3 && strncasecmp(s, days[i], 3) == 0)
			return i;
	return -1;
}

/* "Mon-Fri", "Sat,Sun", "Mon,Wed-Fri": a set of days (a range may wrap,
 * "Fri-Mon"). Returns the bits, or 0 if malformed. */
static uint8_t parse_days(const char *s, size_t n)
{
	uint8_t bits = 0;
	size_t i = 0;
	while (i < n) {
		size_t e = i;
		while (e < n && s[e] != ',')
			e++;
		const char *dash = memchr(s + i, '-', e - i);
		int a = day_index(s + i, dash ? (size_t)(dash - (s + i)) : e - i);
		int b = dash ? day_index(dash + 1, (size_t)(s + e - dash - 1)) : a;
		if (a < 0 || b < 0)
			return 0;
		for (int d = a;; d = (d + 1) % 7) {
			bits |= (uint8_t)(1u << d);
			if (d == b)
				break;
		}
		i = e + 1;
		if (e + 1 == n)
			return 0; /* trailing comma */
	}
	return bits;
}

/* "HH:MM" with 00:00 to 24:00, in minutes; or -1. */
static int parse_hhmm(const char *s, size_t n)
{
	if (n != 5 || s[2] != ':')
		return -1;
	for (size_t i = 0; i < 5; i++)
		if (i != 2 && (s[i] < '0' || s[i] > '9'))
			return -1;
	int h = (s[0] - '0') * 10 + (s[1] - '0'), m = (s[3] - '0') * 10 + (s[4] - '0');
	if (m > 59 || h > 24 || (h == 24 && m != 0))
		return -1;
	return h * 60 + m;
}

/* "[DAYS ]HH:MM-HH:MM": DAYS left out means every day. */
static int parse_window(struct ctx *c, const struct ynode *n, struct policy_window *w)
{
	const char *s;
	int r = get_string(c, n, "hours", &s);
	if (r < 0)
		return r;
	size_t len = strlen(s);
	const char *sp = strrchr(s, ' ');
	const char *t = sp ? sp + 1 : s;
	size_t tl = len - (size_t)(t - s);
	w->days = sp ? parse_days(s, (size_t)(sp - s)) : 0x7f;
	int a = tl == 11 && t[5] == '-' ? parse_hhmm(t, 5) : -1;
	int b = a >= 0 ? parse_hhmm(t + 6, 5) : -1;
	if (!w->days || a < 0 || b < 0)
		return fail(c, n,
		            "hours: expected \"[DAYS ]HH:MM-HH:MM\" such as \"Mon-Fri 08:00-18:00\" or \"00:00-24:00\" "
		            "(days Mon Tue Wed Thu Fri Sat Sun, ranges with -, lists with ,)");
	if (a >= b)
		return fail(c, n,
		            "hours: a window must end after it starts (%s); split a window across midnight in two, "
		            "such as \"Fri 22:00-24:00\" and \"Sat 00:00-06:00\"",
		            Q(s));
	w->start = (uint16_t)a;
	w->end = (uint16_t)b;
	return 0;
}

static int parse_hours(struct ctx *c, const struct ynode *n, struct policy_quota *q)
{
	if (n->type != Y_SEQ)
		return fail(c, n, "hours: expected a list of windows such as [\"Mon-Fri 08:00-18:00\"], found %s",
		            ynode_kind(n));
	if (n->n > POLICY_MAX_WINDOWS)
		return fail(c, n, "hours: more than %d windows", POLICY_MAX_WINDOWS);
	for (size_t i = 0; i < n->n; i++) {
		int r = parse_window(c, n->items[i], &q->windows[i]);
		if (r < 0)
			return r;
	}
	q->n_windows = n->n;
	q->has_hours = true;
	return 0;
}

/* "UTC", or a fixed offset from it: "+02:00", "-05:30". */
static int parse_timezone(struct ctx *c, const struct ynode *n, struct policy_quota *q)
{
	const char *s;
	int r = get_string(c, n, "timezone", &s);
	if (r < 0)
		return r;
	if (streq(s, "UTC")) {
		q->tz_offset_min = 0;
		return 0;
	}
	int m = (s[0] == '+' || s[0] == '-') ? parse_hhmm(s + 1, strlen(s + 1)) : -1;
	if (m < 0 || m > 14 * 60)
		return fail(c, n,
		            "timezone: expected UTC or a fixed offset from -14:00 to +14:00 such as +02:00 (names like "
		            "Europe/Paris are not read: keyward's windows do not follow daylight saving time)");
	q->tz_offset_min = s[0] == '-' ? -m : m;
	return 0;
}

/* rate:, burst:, hours:, timezone: of a route or a credential; any may be
 * NULL. */
static int parse_quota(struct ctx *c, const struct ynode *rate, const struct ynode *burst, const struct ynode *hours,
                       const struct ynode *tz, struct policy_quota *q)
{
	uint64_t v;
	int r = 0;
	if (rate)
		r = parse_rate(c, rate, q);
	if (r < 0)
		return r;
	if (burst && !rate)
		return fail(c, burst, "burst: needs rate: (burst is the size of the rate's bucket)");
	q->burst = q->rate_count;
	if (burst) {
		r = get_uint(c, burst, "burst", 1, 1000000000, &v);
		if (r < 0)
			return r;
		q->burst = v;
	}
	if (tz && !hours)
		return fail(c, tz, "timezone: applies to hours:, which are not given here");
	if (hours)
		r = parse_hours(c, hours, q);
	if (r >= 0 && tz)
		r = parse_timezone(c, tz, q);
	return r;
}

/* ---- routes ---- */

enum {
	R_HOST,
	R_PORT,
	R_SCHEME,
	R_METHODS,
	R_PATHS,
	R_CREDENTIAL,
	R_INJECT,
	R_UPSTREAM_CA,
	R_MAX_BODY,
	R_ALLOW_PRIVATE,
	R_COMPRESSED,
	R_RATE,
	R_BURST,
	R_HOURS,
	R_TIMEZONE,
	R_N
};
static const char *const route_keys[] = { "host",     "port",          "scheme",     "methods",
	                                  "paths",    "credential",    "inject",     "upstream_ca",
	                                  "max_body", "allow_private", "compressed", "rate",
	                                  "burst",    "hours",         "timezone",   NULL };

/* compressed: decode | refuse, for the responses of a credentialed route. */
static int parse_compressed(struct ctx *c, const struct ynode *n, struct policy_route *route)
{
	const char *s;
	int r = get_string(c, n, "compressed", &s);
	if (r < 0)
		return r;
	if (!route->credential)
		return fail(c, n, "compressed: applies to routes with a credential (their responses are scanned)");
	if (streq(s, "decode") || streq(s, "refuse")) {
		route->refuse_compressed = streq(s, "refuse");
		return 0;
	}
	return fail(c, n, "compressed: expected decode or refuse");
}

static int parse_route_rest(struct ctx *c, const struct ynode *const *f, struct policy_route *route)
{
	uint64_t v;
	int r;

	if (f[R_PORT]) {
		r = get_uint(c, f[R_PORT], "port", 1, 65535, &v);
		if (r < 0)
			return r;
		route->port = (uint16_t)v;
	}
	if (f[R_SCHEME]) {
		const char *s;
		r = get_string(c, f[R_SCHEME], "scheme", &s);
		if (r < 0)
			return r;
		if (streq(s, "https"))
			route->scheme = SCHEME_HTTPS;
		else if (streq(s, "http"))
			route->scheme = SCHEME_HTTP;
		else
			return fail(c, f[R_SCHEME], "scheme: expected https or http");
	}
	if (f[R_UPSTREAM_CA]) {
		const char *s;
		r = get_nonempty(c, f[R_UPSTREAM_CA], "upstream_ca", &s);
		if (r < 0)
			return r;
		r = dup_string(c, s, &route->upstream_ca);
		if (r < 0)
			return r;
	}
	if (f[R_MAX_BODY]) {
		r = get_size(c, f[R_MAX_BODY], "max_body", 0, UINT64_MAX, &route->max_body);
		if (r < 0)
			return r;
	}
	if (f[R_ALLOW_PRIVATE]) {
		bool b = false;
		r = get_bool(c, f[R_ALLOW_PRIVATE], "allow_private", &b);
		if (r < 0)
			return r;
		if (!b && route->allow_private)
			return fail(c, f[R_ALLOW_PRIVATE],
			            "allow_private: false contradicts host \"%s\", which names a "
			            "loopback or private address",
			            route->host);
		route->allow_private = b;
	}
	if (f[R_COMPRESSED]) {
		r = parse_compressed(c, f[R_COMPRESSED], route);
		if (r < 0)
			return r;
	}
	return parse_quota(c, f[R_RATE], f[R_BURST], f[R_HOURS], f[R_TIMEZONE], &route->quota);
}

static int parse_route(struct ctx *c, const struct ynode *n, struct policy *p, struct policy_route *route)
{
	const struct ynode *f[R_N] = { 0 }, *k[R_N] = { 0 };
	int r;

	route->line = n->line;
	route->column = n->column;
	if (n->type != Y_MAP)
		return fail(c, n, "routes: each route is a mapping with host:, found %s", ynode_kind(n));
	r = map_fields(c, n, route_keys, f, k, "route");
	if (r < 0)
		return r;
	if (!f[R_HOST])
		return fail(c, n, "route has no host:");
	r = parse_host(c, f[R_HOST], route);
	if (r < 0)
		return r;
	if (f[R_METHODS]) {
		r = parse_methods(c, f[R_METHODS], route);
		if (r < 0)
			return r;
	}
	if (f[R_PATHS]) {
		r = parse_paths(c, f[R_PATHS], route);
		if (r < 0)
			return r;
	}
	if (f[R_CREDENTIAL]) {
		r = find_route_credential(c, f[R_CREDENTIAL], p, route);
		if (r < 0)
			return r;
		/* an aws credential is used one way only: re-signing */
		if (!f[R_INJECT] && route->credential->kind == CRED_AWS)
			route->inject = INJECT_SIGV4;
		/* a minted token is a bearer token unless the route says otherwise */
		else if (!f[R_INJECT] && route->credential->mint)
			route->inject = INJECT_BEARER;
		else if (!f[R_INJECT])
			return fail(c, k[R_CREDENTIAL], "route has credential but no inject: mode");
	}
	if (f[R_INJECT]) {
		if (!f[R_CREDENTIAL])
			return fail(c, k[R_INJECT], "route has inject: but no credential:");
		r = parse_inject(c, f[R_INJECT], route);
		if (r < 0)
			return r;
		bool aws = route->credential->kind == CRED_AWS;
		if (aws && route->inject != INJECT_SIGV4)
			return fail(c, f[R_INJECT],
			            "credential \"%s\" is of kind aws: its routes re-sign requests (inject: sigv4, "
			            "or no inject:)",
			            route->credential->name);
		if (!aws && route->inject == INJECT_SIGV4)
			return fail(c, f[R_INJECT], "inject: sigv4 needs a credential of kind aws (\"%s\" is %s)",
			            route->credential->name, policy_kind_name(route->credential->kind));
	}
	return parse_route_rest(c, f, route);
}

static int parse_routes(struct ctx *c, const struct ynode *n, struct policy *p)
{
	if (n->type != Y_SEQ)
		return fail(c, n, "routes: expected a sequence of routes, found %s", ynode_kind(n));
	if (n->n > POLICY_MAX_ROUTES)
		return fail(c, n, "routes: more than %d routes", POLICY_MAX_ROUTES);
	if (n->n == 0)
		return 0;
	p->routes = calloc(n->n, sizeof(*p->routes));
	if (!p->routes)
		return fail_oom(c);
	for (size_t i = 0; i < n->n; i++) {
		p->n_routes++;
		p->routes[i].index = i;
		int r = parse_route(c, n->items[i], p, &p->routes[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- top level ---- */

/* ---- sandbox ---- */

static int parse_sandbox_paths(struct ctx *c, const struct ynode *n, const char *key, bool write,
                               struct policy_sandbox *sb)
{
	if (n->type != Y_SEQ)
		return fail(c, n, "%s: expected a sequence of paths such as [/opt/tools], found %s", key,
		            ynode_kind(n));
	if (sb->n_paths + n->n > SANDBOX_MAX_PATHS)
		return fail(c, n, "%s: more than %d paths in read_only and read_write together", key,
		            SANDBOX_MAX_PATHS);
	for (size_t i = 0; i < n->n; i++) {
		const struct ynode *item = n->items[i];
		const char *s;
		int r = get_nonempty(c, item, key, &s);
		if (r < 0)
			return r;
		/* ".." would let a relative entry climb out of the policy's
		 * folder in ways a reader of the policy does not see. */
		for (const char *q = s; (q = strstr(q, "..")); q += 2)
			if ((q == s || q[-1] == '/') && (q[2] == '\0' || q[2] == '/'))
				return fail(c, item, "%s: \"%s\": a \"..\" component is not allowed", key, Q(s));
		if (s[0] == '/' && !s[strspn(s, "/.")] && !strstr(s, ".."))
			return fail(c, item, "%s: \"%s\" would show the whole host to the sandbox", key, Q(s));
		const char *kfs = kernel_fs_of(s);
		if (kfs)
			return fail(c, item,
			            "%s: \"%s\" is in the host's %s, which the sandbox has its own of; "
			            "binding the host's would let it read or change the host's kernel and devices",
			            key, Q(s), kfs);
		struct policy_sandbox_path *sp = &sb->paths[sb->n_paths];
		r = dup_string(c, s, &sp->path);
		if (r < 0)
			return r;
		sp->write = write;
		sp->line = item->line;
		sp->column = item->column;
		sb->n_paths++;
	}
	return 0;
}

static int parse_sandbox_env(struct ctx *c, const struct ynode *n, const struct policy *p, struct policy_sandbox *sb)
{
	if (n->type != Y_SEQ)
		return fail(c, n, "env: expected a sequence of variable names such as [TERM, EDITOR], found %s",
		            ynode_kind(n));
	if (n->n > SANDBOX_MAX_ENV)
		return fail(c, n, "env: more than %d names", SANDBOX_MAX_ENV);
	sb->env = calloc(n->n + 1, sizeof(char *));
	if (!sb->env)
		return fail_oom(c);
	for (size_t i = 0; i < n->n; i++) {
		const char *s;
		int r = get_nonempty(c, n->items[i], "env", &s);
		if (r < 0)
			return r;
		if (!valid_env_name(s))
			return fail(c, n->items[i], "env: \"%s\" is not a variable name", Q(s));
		/* Passing a credential's source variable would hand the secret
		 * itself to the sandbox. */
		for (size_t k = 0; k < p->n_creds; k++) {
			const struct policy_credential *cr = &p->creds[k];
			if (cr->source == SOURCE_ENV && streq(cr->source_arg, s))
				return fail(
				    c, n->items[i],
				    "env: %s holds the secret of credential \"%s\"; it never enters the sandbox", s,
				    cr->name);
			if (cr->env && streq(cr->env, s))
				return fail(c, n->items[i],
				            "env: %s is already set to the placeholder of credential \"%s\"", s,
				            cr->name);
		}
		r = dup_string(c, s, &sb->env[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static int parse_sandbox_ports(struct ctx *c, const struct ynode *n, struct policy_sandbox *sb)
{
	if (n->type != Y_SEQ)
		return fail(c, n, "ports: expected a sequence of TCP ports such as [8000], found %s", ynode_kind(n));
	if (n->n > SANDBOX_MAX_PORTS)
		return fail(c, n, "ports: more than %d ports", SANDBOX_MAX_PORTS);
	for (size_t i = 0; i < n->n; i++) {
		uint64_t v;
		int r = get_uint(c, n->items[i], "ports", 1, 65535, &v);
		if (r < 0)
			return r;
		sb->ports[sb->n_ports++] = (uint16_t)v;
	}
	return 0;
}

enum { SL_MEMORY, SL_PIDS, SL_CPU, SL_PROCESSES, SL_OPEN_FILES, SL_FILE_SIZE, SL_TMP_SIZE, SL_N };
static const char *const sandbox_limit_keys[] = { "memory",     "pids",      "cpu",      "processes",
	                                          "open_files", "file_size", "tmp_size", NULL };

static int parse_sandbox_limits(struct ctx *c, const struct ynode *n, struct policy_sandbox *sb)
{
	const struct ynode *f[SL_N] = { 0 };
	int r = expect_map(c, n, "limits");
	if (r == 0)
		r = map_fields(c, n, sandbox_limit_keys, f, NULL, "sandbox limits");
	if (r == 0 && f[SL_MEMORY])
		r = get_size(c, f[SL_MEMORY], "memory", 16 * 1024 * 1024, UINT64_MAX / 2, &sb->memory);
	if (r == 0 && f[SL_PIDS])
		r = get_uint(c, f[SL_PIDS], "pids", 8, 1000000, &sb->pids);
	if (r == 0 && f[SL_CPU]) {
		const char *s;
		r = get_string(c, f[SL_CPU], "cpu", &s);
		if (r == 0 && (parse_digits(&s, &sb->cpu_percent) < 0 || !streq(s, "%") || sb->cpu_percent < 1 ||
		               sb->cpu_percent > 100000))
			r = fail(c, f[SL_CPU], "cpu: expected a percentage of one core such as 50%% or 200%%");
	}
	if (r == 0 && f[SL_PROCESSES])
		r = get_uint(c, f[SL_PROCESSES], "processes", 8, 1000000, &sb->processes);
	if (r == 0 && f[SL_OPEN_FILES])
		r = get_uint(c, f[SL_OPEN_FILES], "open_files", 16, 1048576, &sb->open_files);
	if (r == 0 && f[SL_FILE_SIZE])
		r = get_size(c, f[SL_FILE_SIZE], "file_size", 4096, UINT64_MAX / 2, &sb->file_size);
	if (r == 0 && f[SL_TMP_SIZE])
		r = get_size(c, f[SL_TMP_SIZE], "tmp_size", 1024 * 1024, UINT64_MAX / 2, &sb->tmp_size);
	return r;
}

enum { S_WORKSPACE, S_READ_ONLY, S_READ_WRITE, S_ENV, S_PORTS, S_LANDLOCK, S_LIMITS, S_N };
static const char *const sandbox_keys[] = { "workspace", "read_only", "read_write", "env",
	                                    "ports",     "landlock",  "limits",     NULL };

/* Runs after credentials: are parsed (env: names are checked against them). */
static int parse_sandbox(struct ctx *c, const struct ynode *n, struct policy *p)
{
	const struct ynode *f[S_N] = { 0 };
	struct policy_sandbox *sb = &p->sandbox;
	int r = expect_map(c, n, "sandbox");
	if (r == 0)
		r = map_fields(c, n, sandbox_keys, f, NULL, "sandbox");
	if (r == 0 && f[S_WORKSPACE]) {
		const char *s;
		r = get_nonempty(c, f[S_WORKSPACE], "workspace", &s);
		if (r == 0 && streq(s, "/"))
			r = fail(c, f[S_WORKSPACE], "workspace: \"/\" would give the sandbox the whole host");
		if (r == 0)
			r = dup_string(c, s, &sb->workspace);
	}
	if (r == 0 && (f[S_READ_ONLY] || f[S_READ_WRITE])) {
		sb->paths = calloc(SANDBOX_MAX_PATHS, sizeof(*sb->paths));
		if (!sb->paths)
			return fail_oom(c);
	}
	if (r == 0 && f[S_READ_ONLY])
		r = parse_sandbox_paths(c, f[S_READ_ONLY], "read_only", false, sb);
	if (r == 0 && f[S_READ_WRITE])
		r = parse_sandbox_paths(c, f[S_READ_WRITE], "read_write", true, sb);
	if (r == 0 && f[S_ENV])
		r = parse_sandbox_env(c, f[S_ENV], p, sb);
	if (r == 0 && f[S_PORTS])
		r = parse_sandbox_ports(c, f[S_PORTS], sb);
	if (r == 0 && f[S_LANDLOCK]) {
		const char *s;
		r = get_string(c, f[S_LANDLOCK], "landlock", &s);
		if (r == 0 && !streq(s, "auto") && !streq(s, "required"))
			r = fail(c, f[S_LANDLOCK],
			         "landlock: expected auto (use it where the kernel has it) or required (refuse to run "
			         "without it)");
		if (r == 0)
			sb->require_landlock = streq(s, "required");
	}
	if (r == 0 && f[S_LIMITS])
		r = parse_sandbox_limits(c, f[S_LIMITS], sb);
	return r;
}

enum { T_VERSION, T_CREDENTIALS, T_ROUTES, T_SANDBOX, T_AUDIT, T_UPSTREAM_CA, T_LIMITS, T_N };
static const char *const top_keys[] = { "version", "credentials", "routes", "sandbox",
	                                "audit",   "upstream_ca", "limits", NULL };

static int parse_top_path(struct ctx *c, const struct ynode *n, const char *key, char **ret)
{
	const char *s;
	int r = get_nonempty(c, n, key, &s);
	if (r < 0)
		return r;
	return dup_string(c, s, ret);
}

static int parse_policy(struct ctx *c, const struct ynode *root, struct policy *p)
{
	const struct ynode *f[T_N] = { 0 }, *k[T_N] = { 0 };
	int r;

	if (!root || ynode_is_null(root))
		return fail_at(c, 1, 1, "policy is empty (it starts with version: 1)");
	if (root->type != Y_MAP)
		return fail(c, root, "policy must be a mapping that starts with version: 1");
	r = map_fields(c, root, top_keys, f, k, "policy");
	if (r < 0)
		return r;
	if (!f[T_VERSION])
		return fail(c, root, "policy has no version: (this keyward reads version: 1)");
	if (f[T_VERSION]->type != Y_SCALAR || !streq(f[T_VERSION]->value, "1"))
		return fail(c, f[T_VERSION], "unsupported policy version \"%s\" (this keyward reads version 1)",
		            f[T_VERSION]->type == Y_SCALAR ? Q(f[T_VERSION]->value) : "?");
	if (f[T_LIMITS]) {
		r = parse_limits(c, f[T_LIMITS], &p->limits);
		if (r < 0)
			return r;
	}
	if (f[T_CREDENTIALS]) {
		r = parse_credentials(c, f[T_CREDENTIALS], p);
		if (r < 0)
			return r;
	}
	if (f[T_ROUTES]) {
		r = parse_routes(c, f[T_ROUTES], p);
		if (r < 0)
			return r;
	}
	if (f[T_SANDBOX]) {
		r = parse_sandbox(c, f[T_SANDBOX], p);
		if (r < 0)
			return r;
	}
	if (f[T_AUDIT]) {
		r = parse_top_path(c, f[T_AUDIT], "audit", &p->audit);
		if (r < 0)
			return r;
	}
	if (f[T_UPSTREAM_CA]) {
		r = parse_top_path(c, f[T_UPSTREAM_CA], "upstream_ca", &p->upstream_ca);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- public ---- */

int policy_load_string(const char *name, const char *yaml, size_t len, struct policy **ret, struct policy_error *err)
{
	struct policy_error scratch;
	struct ctx c = { .name = name ? name : "policy", .err = err ? err : &scratch };
	struct ynode *root = NULL;
	struct policy *p = NULL;
	int r;

	if (!yaml) {
		yaml = "";
		len = 0;
	}
	r = check_text(&c, yaml, len);
	if (r < 0)
		return r;
	r = yaml_to_tree(&c, yaml, len, &root);
	if (r < 0)
		return r;
	p = calloc(1, sizeof(*p));
	if (!p) {
		r = fail_oom(&c);
		goto out;
	}
	p->limits = (struct policy_limits){
		.max_header_bytes = 64 * 1024,
		.max_headers = 100,
		.header_timeout_ms = 10 * 1000,
		.idle_timeout_ms = 60 * 1000,
		.upstream_timeout_ms = 300 * 1000,
		.drain_timeout_ms = 30 * 1000,
		.max_body = 0,
		.max_decoded_body = 1024 * 1024 * 1024,
	};
	r = dup_string(&c, c.name, &p->path);
	if (r >= 0)
		r = parse_policy(&c, root, p);
	if (r >= 0)
		*ret = TAKE_PTR(p);
out:
	policy_free(p);
	ynode_free(root);
	return r < 0 ? r : 0;
}

/* Makes *p relative to dir (the policy file's folder) when it is relative,
 * so that a policy means the same whatever directory keyward starts in. */
static int rebase(char **p, const char *dir, size_t dl)
{
	if (!*p || (*p)[0] == '/' || dl == 0)
		return 0;
	size_t n = strlen(*p);
	char *q = malloc(dl + 1 + n + 1);
	if (!q)
		return -ENOMEM;
	memcpy(q, dir, dl);
	q[dl] = '/';
	memcpy(q + dl + 1, *p, n + 1);
	free(*p);
	*p = q;
	return 0;
}

static int resolve_relative_paths(struct policy *p, const char *path)
{
	const char *slash = strrchr(path, '/');
	size_t dl = slash ? (size_t)(slash - path) : 0;
	if (slash && dl == 0)
		dl = 1; /* the policy is in "/" */
	int r = rebase(&p->audit, path, dl);
	if (r == 0)
		r = rebase(&p->upstream_ca, path, dl);
	for (size_t i = 0; r == 0 && i < p->n_creds; i++)
		if (p->creds[i].source == SOURCE_FILE)
			r = rebase(&p->creds[i].source_arg, path, dl);
		else if (p->creds[i].mint)
			r = rebase(&p->creds[i].mint->upstream_ca, path, dl);
	for (size_t i = 0; r == 0 && i < p->n_routes; i++)
		r = rebase(&p->routes[i].upstream_ca, path, dl);
	if (r == 0)
		r = rebase(&p->sandbox.workspace, path, dl);
	for (size_t i = 0; r == 0 && i < p->sandbox.n_paths; i++)
		r = rebase(&p->sandbox.paths[i].path, path, dl);
	return r;
}

int policy_load(const char *path, struct policy **ret, struct policy_error *err)
{
	struct policy_error scratch;
	struct ctx c = { .name = path, .err = err ? err : &scratch };
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *data = NULL;
	struct stat st;
	size_t len = 0;

	/* O_NONBLOCK: a FIFO must not hang the open; it is refused below */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		int e = errno;
		fail_at(&c, 0, 0, "cannot open: %s", strerror(e));
		return -e;
	}
	if (fstat(fd, &st) < 0) {
		int e = errno;
		fail_at(&c, 0, 0, "cannot stat: %s", strerror(e));
		return -e;
	}
	if (!S_ISREG(st.st_mode))
		return fail_at(&c, 0, 0, "not a regular file");
	if (st.st_size > POLICY_MAX_BYTES)
		return fail_at(&c, 0, 0, "policy is larger than 1 MiB");

	/* read to the ceiling plus one: the file may grow after fstat */
	data = malloc(POLICY_MAX_BYTES + 1);
	if (!data)
		return fail_oom(&c);
	while (len <= POLICY_MAX_BYTES) {
		ssize_t n = read(fd, data + len, POLICY_MAX_BYTES + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			fail_at(&c, 0, 0, "cannot read: %s", strerror(e));
			return -e;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	struct policy *pol;
	int r = policy_load_string(path, data, len, &pol, err);
	if (r < 0)
		return r;
	r = resolve_relative_paths(pol, path);
	if (r < 0) {
		policy_free(pol);
		return fail_oom(&c);
	}
	*ret = pol;
	return 0;
}

static void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

/* ---- credentials: how a token is minted ---- */

/* "https://host[:port][/path]" into m->url, host, port, path. The host is
 * checked by the rules of a route's host: (parse_host), which also says
 * whether it names a loopback or private address. */
static int parse_mint_url(struct ctx *c, const struct ynode *n, const char *key, const char *suffix,
                          struct policy_mint *m)
{
	const char *s;
	int r = get_nonempty(c, n, key, &s);
	if (r < 0)
		return r;
	if (strncmp(s, "https://", 8) != 0)
		return fail(c, n, "%s: expected an https:// URL (token endpoints are reached over verified TLS)", key);
	for (const char *q = s; *q; q++)
		if (*q <= 0x20 || *q >= 0x7f || *q == '#')
			return fail(c, n, "%s: invalid character in URL", key);
	const char *a = s + 8;
	size_t al = strcspn(a, "/?");
	const char *rest = a + al;
	if (al == 0 || al > HOST_MAX + 8)
		return fail(c, n, "%s: URL has no host", key);
	char auth[HOST_MAX + 16], *colon;
	memcpy(auth, a, al);
	auth[al] = 0;
	uint64_t port = 443;
	if (strchr(auth, '@'))
		return fail(c, n, "%s: user information in a URL is not allowed", key);
	colon = strrchr(auth, ':');
	if (colon && (auth[0] != '[' || colon > strchr(auth, ']'))) {
		const char *ps = colon + 1;
		if (parse_digits(&ps, &port) < 0 || *ps || port < 1 || port > 65535)
			return fail(c, n, "%s: invalid port in URL", key);
		*colon = 0;
	}
	struct ynode hn = *n;
	hn.value = auth;
	hn.len = strlen(auth);
	struct policy_route tmp = { 0 };
	r = parse_host(c, &hn, &tmp);
	if (r < 0)
		return r;
	m->host = tmp.host;
	if (tmp.wildcard)
		return fail(c, n, "%s: a URL cannot name a wildcard host", key);
	m->port = (uint16_t)port;
	m->allow_private = tmp.allow_private;
	const char *path = *rest == '/' ? rest : "/";
	if (*rest == '?')
		return fail(c, n, "%s: URL has a query but no path", key);
	size_t pl = strlen(path);
	if (pl > 0 && path[pl - 1] == '/' && suffix)
		pl--; /* api_url: "https://host/api/v3/" */
	if (asprintf(&m->path, "%.*s%s", (int)pl, path, suffix ? suffix : "") < 0 ||
	    asprintf(&m->url, "https://%.*s%s", (int)al, a, m->path) < 0) {
		m->url = NULL;
		return fail_oom(c);
	}
	return 0;
}

/* A sequence of strings, each checked by ok(), into a NULL-terminated array. */
static int parse_string_list(struct ctx *c, const struct ynode *n, const char *key, size_t max,
                             bool (*ok)(const char *), const char *what, char ***ret)
{
	if (n->type != Y_SEQ)
		return fail(c, n, "%s: expected a sequence of %s, found %s", key, what, ynode_kind(n));
	if (n->n == 0 || n->n > max)
		return fail(c, n, "%s: expected 1 to %zu %s", key, max, what);
	char **v = calloc(n->n + 1, sizeof(char *));
	if (!v)
		return fail_oom(c);
	*ret = v;
	for (size_t i = 0; i < n->n; i++) {
		const char *s;
		int r = get_nonempty(c, n->items[i], key, &s);
		if (r < 0)
			return r;
		if (!ok(s))
			return fail(c, n->items[i], "%s: \"%s\" is not a valid %s", key, Q(s), what);
		for (size_t j = 0; j < i; j++)
			if (streq(v[j], s))
				return fail(c, n->items[i], "%s: \"%s\" is listed twice", key, Q(s));
		r = dup_string(c, s, &v[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

/* RFC 6749 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ) */
static bool scope_ok(const char *s)
{
	for (; *s; s++)
		if (*s < 0x21 || *s > 0x7e || *s == '"' || *s == '\\')
			return false;
	return true;
}

/* A GitHub repository name (without owner): A-Z a-z 0-9 . _ - */
static bool repo_ok(const char *s)
{
	return name_valid(s, 1, 100);
}

static bool perm_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
			return false;
	return true;
}

static int parse_permissions(struct ctx *c, const struct ynode *n, struct policy_mint *m)
{
	if (n->type != Y_MAP)
		return fail(c, n, "permissions: expected a mapping such as {contents: read}, found %s", ynode_kind(n));
	size_t k = n->n / 2;
	if (k == 0 || k > 64)
		return fail(c, n, "permissions: expected 1 to 64 permissions");
	m->permissions = calloc(2 * k + 1, sizeof(char *));
	if (!m->permissions)
		return fail_oom(c);
	for (size_t i = 0; i < k; i++) {
		const struct ynode *key = n->items[2 * i], *val = n->items[2 * i + 1];
		const char *level;
		if (!perm_name_ok(key->value) || strlen(key->value) != key->len)
			return fail(c, key, "permissions: \"%s\" is not a permission name (a-z 0-9 _)", Q(key->value));
		int r = get_nonempty(c, val, "permissions", &level);
		if (r < 0)
			return r;
		if (!streq(level, "read") && !streq(level, "write") && !streq(level, "admin"))
			return fail(c, val, "permissions: %s: expected read, write or admin", key->value);
		r = dup_string(c, key->value, &m->permissions[2 * i]);
		if (r == 0)
			r = dup_string(c, level, &m->permissions[2 * i + 1]);
		if (r < 0)
			return r;
	}
	return 0;
}

static int parse_mint_id(struct ctx *c, const struct ynode *n, const char *key, char **ret)
{
	const char *s;
	int r = get_nonempty(c, n, key, &s);
	if (r < 0)
		return r;
	if (strlen(s) > 20 || strspn(s, "0123456789") != strlen(s) || s[0] == '0')
		return fail(c, n, "%s: expected a positive decimal number", key);
	return dup_string(c, s, ret);
}

/* The non-secret keys of a minted kind, found by parse_parts in f[]. */
static int parse_mint(struct ctx *c, const struct ynode *val, struct policy_credential *cred,
                      const struct ynode *const *f)
{
	struct policy_mint *m = calloc(1, sizeof(*m));
	int r = 0;
	if (!m)
		return fail_oom(c);
	cred->mint = m;
	bool github = cred->kind == CRED_GITHUB_APP;
	if (!github) {
		if (!f[MK_TOKEN_URL])
			return fail(c, val, "credential \"%s\" (kind %s) needs token_url:", cred->name,
			            policy_kind_name(cred->kind));
		r = parse_mint_url(c, f[MK_TOKEN_URL], "token_url", NULL, m);
	} else {
		if (!f[MK_APP_ID] || !f[MK_INSTALLATION_ID])
			return fail(c, val, "credential \"%s\" (kind github_app) needs app_id: and installation_id:",
			            cred->name);
		char suffix[64];
		r = parse_mint_id(c, f[MK_APP_ID], "app_id", &m->app_id);
		if (r == 0)
			r = parse_mint_id(c, f[MK_INSTALLATION_ID], "installation_id", &m->installation_id);
		if (r < 0)
			return r;
		snprintf(suffix, sizeof(suffix), "/app/installations/%s/access_tokens", m->installation_id);
		if (f[MK_API_URL]) {
			r = parse_mint_url(c, f[MK_API_URL], "api_url", suffix, m);
		} else {
			struct ynode def = *val;
			def.type = Y_SCALAR;
			def.value = (char *)"https://api.github.com";
			def.len = strlen(def.value);
			def.plain = false;
			r = parse_mint_url(c, &def, "api_url", suffix, m);
		}
	}
	if (r == 0 && f[MK_SCOPES])
		r = parse_string_list(c, f[MK_SCOPES], "scopes", 64, scope_ok, "scope", &m->scopes);
	if (r == 0 && f[MK_AUDIENCE]) {
		const char *s;
		r = get_nonempty(c, f[MK_AUDIENCE], "audience", &s);
		if (r == 0)
			r = dup_string(c, s, &m->audience);
	}
	if (r == 0 && f[MK_CLIENT_AUTH]) {
		const char *s;
		r = get_string(c, f[MK_CLIENT_AUTH], "client_auth", &s);
		if (r == 0 && !streq(s, "basic") && !streq(s, "post"))
			r = fail(c, f[MK_CLIENT_AUTH], "client_auth: expected basic or post");
		m->client_auth_post = r == 0 && streq(s, "post");
	}
	if (r == 0 && f[MK_REPOSITORIES])
		r = parse_string_list(c, f[MK_REPOSITORIES], "repositories", 500, repo_ok, "repository name",
		                      &m->repositories);
	if (r == 0 && f[MK_PERMISSIONS])
		r = parse_permissions(c, f[MK_PERMISSIONS], m);
	if (r == 0 && f[MK_UPSTREAM_CA]) {
		const char *s;
		r = get_nonempty(c, f[MK_UPSTREAM_CA], "upstream_ca", &s);
		if (r == 0)
			r = dup_string(c, s, &m->upstream_ca);
	}
	if (r == 0 && f[MK_ALLOW_PRIVATE]) {
		bool b = false;
		r = get_bool(c, f[MK_ALLOW_PRIVATE], "allow_private", &b);
		if (r == 0 && !b && m->allow_private)
			r = fail(
			    c, f[MK_ALLOW_PRIVATE],
			    "allow_private: false contradicts host \"%s\", which names a loopback or private address",
			    m->host);
		if (r == 0)
			m->allow_private = b;
	}
	return r;
}

static void mint_free(struct policy_mint *m)
{
	if (!m)
		return;
	free(m->url);
	free(m->host);
	free(m->path);
	strv_free(m->scopes);
	free(m->audience);
	free(m->upstream_ca);
	free(m->upstream_ca_pem);
	free(m->app_id);
	free(m->installation_id);
	strv_free(m->repositories);
	strv_free(m->permissions);
	free(m);
}

void policy_free(struct policy *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_creds; i++) {
		struct policy_credential *cr = &p->creds[i];
		free(cr->name);
		free(cr->source_arg);
		free(cr->env);
		free(cr->placeholder);
		mint_free(cr->mint);
	}
	free(p->creds);
	for (size_t i = 0; i < p->n_routes; i++) {
		struct policy_route *r = &p->routes[i];
		free(r->host);
		strv_free(r->methods);
		strv_free(r->paths);
		free(r->inject_user);
		free(r->inject_header);
		free(r->inject_value);
		free(r->inject_query);
		free(r->upstream_ca);
		free(r->upstream_ca_pem);
	}
	free(p->routes);
	free(p->sandbox.workspace);
	for (size_t i = 0; i < p->sandbox.n_paths; i++)
		free(p->sandbox.paths[i].path);
	free(p->sandbox.paths);
	strv_free(p->sandbox.env);
	free(p->audit);
	free(p->upstream_ca);
	free(p->upstream_ca_pem);
	free(p->path);
	free(p);
}

const struct policy_credential *policy_credential_find(const struct policy *p, const char *name)
{
	if (!p || !name)
		return NULL;
	for (size_t i = 0; i < p->n_creds; i++)
		if (streq(p->creds[i].name, name))
			return &p->creds[i];
	return NULL;
}

int policy_derive_placeholder(const char *name, char *out, size_t outlen)
{
	static const char domain[] = "keyward placeholder v1"; /* hashed with its NUL */
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char hex[2 * 12 + 1];

	if (!name)
		return -EINVAL;
	size_t nlen = strlen(name);
	size_t need = 3 + nlen + 1 + 24;
	if (need + 1 > outlen || need > INT32_MAX)
		return -ENOBUFS;

	EVP_MD_CTX *md_ctx = EVP_MD_CTX_new();
	if (!md_ctx)
		return -ENOMEM;
	int ok = EVP_DigestInit_ex(md_ctx, EVP_sha256(), NULL) && EVP_DigestUpdate(md_ctx, domain, sizeof(domain)) &&
	         EVP_DigestUpdate(md_ctx, name, nlen) && EVP_DigestFinal_ex(md_ctx, md, &mdlen);
	EVP_MD_CTX_free(md_ctx);
	if (!ok || mdlen < 12)
		return -EIO;

	hex_encode(md, 12, hex);
	memcpy(out, "kw_", 3);
	memcpy(out + 3, name, nlen);
	out[3 + nlen] = '_';
	memcpy(out + 4 + nlen, hex, 24);
	out[need] = '\0';
	return (int)need;
}
