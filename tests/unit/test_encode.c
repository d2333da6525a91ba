/* Unit tests for common/encode.c (base64, hex, percent-encoding, mem_find)
 * and common/json.c (the JSON string writer). Rejects first. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/encode.h"
#include "common/json.h"

struct bytes {
	const char *p;
	size_t n;
};
#define B(s)                     \
	{                        \
		s, sizeof(s) - 1 \
	}

/* ---- base64 ---- */

static void test_base64_decode_rejects(void **state)
{
	static const struct bytes bad[] = {
		B("Z"),
		B("Zg"),
		B("Zg="),
		B("Zm9vY"), /* length */
		B("Zg=="
		  "Zg=="), /* padding inside */
		B("===="),
		B("Z==="),
		B("Z=g="),
		B("Zg=a"), /* padding shape */
		B("Zm9v\n"),
		B("Zm 9v"),
		B(" Zm9v"),
		B("Zm9v\r\n"), /* whitespace */
		B("Zm9-"),
		B("Zm9_"),
		B("Zm9."),
		B("Zm\x009v"), /* alphabet */
		B("Zm\xc3\xa9"),
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct buf out;
		buf_init(&out, 64);
		int r = base64_decode(bad[i].p, bad[i].n, &out);
		if (r != -EINVAL)
			fail_msg("case %zu (\"%.*s\"): got %d", i, (int)bad[i].n, bad[i].p, r);
		buf_free(&out);
	}
}

static void test_base64_vectors(void **state)
{
	/* RFC 4648 section 10. */
	static const struct {
		const char *plain, *enc;
	} v[] = {
		{ "", "" },
		{ "f", "Zg==" },
		{ "fo", "Zm8=" },
		{ "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" },
		{ "fooba", "Zm9vYmE=" },
		{ "foobar", "Zm9vYmFy" },
		{ "x-access-token:ghp_abc", "eC1hY2Nlc3MtdG9rZW46Z2hwX2FiYw==" },
		{ "\xfb\xff\xbf", "+/+/" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(v); i++) {
		struct buf e, d;
		buf_init(&e, 256);
		buf_init(&d, 256);
		assert_int_equal(base64_encode(v[i].plain, strlen(v[i].plain), &e), 0);
		assert_int_equal(e.len, strlen(v[i].enc));
		if (e.len)
			assert_memory_equal(e.data, v[i].enc, e.len);
		assert_int_equal(base64_decode(v[i].enc, strlen(v[i].enc), &d), 0);
		assert_int_equal(d.len, strlen(v[i].plain));
		if (d.len)
			assert_memory_equal(d.data, v[i].plain, d.len);
		buf_free(&e);
		buf_free(&d);
	}
}

/* Every length from 0 to 300 of pseudo-random bytes, all byte values. */
static void test_base64_round_trip(void **state)
{
	unsigned char in[300];
	uint32_t x = 12345;
	for (size_t i = 0; i < sizeof(in); i++) {
		x = x * 1103515245 + 12345;
		in[i] = (unsigned char)(x >> 16);
	}
	for (size_t n = 0; n <= sizeof(in); n++) {
		struct buf e, d;
		buf_init(&e, 1024);
		buf_init(&d, 1024);
		assert_int_equal(base64_encode(in, n, &e), 0);
		assert_int_equal(e.len, (n + 2) / 3 * 4);
		assert_int_equal(base64_decode(e.data ? e.data : "", e.len, &d), 0);
		assert_int_equal(d.len, n);
		if (n)
			assert_memory_equal(d.data, in, n);
		buf_free(&e);
		buf_free(&d);
	}
}

/* Non-zero bits under the padding are accepted on purpose, although RFC
 * 4648 section 3.5 allows rejecting them: proxy/inject.c decodes Basic
 * credentials to look for placeholders on their way to the wrong host,
 * and most servers decode such spellings too. A decoder that refused
 * "Zh==" would let a placeholder spelled that way pass unnoticed. */
static void test_base64_decode_lenient_pad_bits(void **state)
{
	static const struct {
		const char *enc, *plain;
	} v[] = { { "Zh==", "f" }, { "Zm9=", "fo" }, { "Zm9vYh==", "foob" } };
	for (size_t i = 0; i < ARRAY_SIZE(v); i++) {
		struct buf d;
		buf_init(&d, 64);
		assert_int_equal(base64_decode(v[i].enc, strlen(v[i].enc), &d), 0);
		assert_int_equal(d.len, strlen(v[i].plain));
		assert_memory_equal(d.data, v[i].plain, d.len);
		buf_free(&d);
	}
}

static void test_base64_ceiling(void **state)
{
	struct buf b;
	buf_init(&b, 7);
	assert_int_equal(base64_encode("foobar", 6, &b), -ENOBUFS);
	buf_free(&b);
	buf_init(&b, 5);
	assert_int_equal(base64_decode("Zm9vYmFy", 8, &b), -ENOBUFS);
	buf_free(&b);
}

/* A buffer of secrets (wipe) grows by copying instead of realloc: it
 * must keep every byte, its NUL after a bare buf_space, and its ceiling,
 * as any buffer does. */
static void test_buf_wipe_grows_like_any_buffer(void **state)
{
	(void)state;
	for (int wipe = 0; wipe <= 1; wipe++) {
		struct buf b;
		char want[3000];
		size_t n = 0;
		buf_init(&b, sizeof(want));
		b.wipe = wipe;
		for (size_t k = 1; n + k <= sizeof(want); k += 7) {
			char piece[64];
			for (size_t i = 0; i < k && i < sizeof(piece); i++)
				piece[i] = (char)('a' + (n + i) % 26);
			size_t m = k < sizeof(piece) ? k : sizeof(piece);
			char *room; /* grows here when it must; nothing kept yet */
			assert_int_equal(buf_space(&b, m, &room), 0);
			if (n > 0) /* a fresh buffer has no NUL before its first append */
				assert_int_equal(b.data[b.len], '\0');
			assert_memory_equal(b.data, want, n);
			assert_int_equal(buf_append(&b, piece, m), 0);
			memcpy(want + n, piece, m);
			n += m;
			assert_int_equal(b.len, n);
			assert_memory_equal(b.data, want, n);
			assert_int_equal(b.data[n], '\0');
		}
		char *room;
		assert_int_equal(buf_space(&b, sizeof(want) - n + 1, &room), -ENOBUFS);
		buf_free(&b);
		assert_null(b.data);
	}
}

/* ---- hex ---- */

static void test_hex(void **state)
{
	char out[16];
	hex_encode("", 0, out);
	assert_string_equal(out, "");
	hex_encode("\x00\x01\x7f\x80\xab\xff", 6, out);
	assert_string_equal(out, "00017f80abff");

	static const struct {
		char c;
		int v;
	} digits[] = {
		{ 'g', -1 },  { 'G', -1 }, { ' ', -1 }, { '/', -1 }, { ':', -1 }, { '@', -1 }, { '`', -1 },
		{ '\0', -1 }, { '0', 0 },  { '9', 9 },  { 'a', 10 }, { 'f', 15 }, { 'A', 10 }, { 'F', 15 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(digits); i++)
		assert_int_equal(hex_value(digits[i].c), digits[i].v);
	assert_int_equal(hex_value((char)0xb0), -1);
}

/* ---- percent-encoding ---- */

static void test_percent_decode_rejects(void **state)
{
	static const struct bytes bad[] = {
		B("%"),    B("%4"),   B("a%"),  B("a%4"), B("%G1"), B("%1G"),
		B("%%41"), B("% 41"), B("%-1"), B("%+1"), B("%0x"), B("ok%2"),
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct buf out;
		buf_init(&out, 64);
		if (percent_decode(bad[i].p, bad[i].n, &out) != -EINVAL)
			fail_msg("case %zu (\"%.*s\") accepted", i, (int)bad[i].n, bad[i].p);
		buf_free(&out);
	}
}

static void test_percent_decode(void **state)
{
	static const struct {
		struct bytes in, out;
	} v[] = {
		{ B(""), B("") },         { B("abc"), B("abc") },         { B("%41%42"), B("AB") },
		{ B("%2f%2F"), B("//") }, { B("a+b"), B("a+b") }, /* '+' is not a space here: that is form encoding */
		{ B("%00"), B("\0") },    { B("%C3%A9"), B("\xc3\xa9") }, { B("%25"), B("%") },
		{ B("%2541"), B("%41") }, /* decoded once, not twice */
		{ B("x%20"), B("x ") },
	};
	for (size_t i = 0; i < ARRAY_SIZE(v); i++) {
		struct buf out;
		buf_init(&out, 64);
		assert_int_equal(percent_decode(v[i].in.p, v[i].in.n, &out), 0);
		assert_int_equal(out.len, v[i].out.n);
		if (out.len)
			assert_memory_equal(out.data, v[i].out.p, out.len);
		buf_free(&out);
	}
}

static void test_percent_encode(void **state)
{
	static const struct {
		struct bytes in;
		const char *out;
	} v[] = {
		{ B(""), "" },
		{ B("AZaz09-._~"), "AZaz09-._~" },
		{ B(" /?#[]@!$&'()*+,;=%"), "%20%2F%3F%23%5B%5D%40%21%24%26%27%28%29%2A%2B%2C%3B%3D%25" },
		{ B("\x00\x7f\xff"), "%00%7F%FF" },
		{ B("\xc3\xa9"), "%C3%A9" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(v); i++) {
		struct buf out, back;
		buf_init(&out, 256);
		buf_init(&back, 256);
		assert_int_equal(percent_encode(v[i].in.p, v[i].in.n, &out), 0);
		assert_int_equal(out.len, strlen(v[i].out));
		if (out.len)
			assert_memory_equal(out.data, v[i].out, out.len);
		assert_int_equal(percent_decode(out.data ? out.data : "", out.len, &back), 0);
		assert_int_equal(back.len, v[i].in.n);
		if (back.len)
			assert_memory_equal(back.data, v[i].in.p, back.len);
		buf_free(&out);
		buf_free(&back);
	}
	struct buf small;
	buf_init(&small, 2);
	assert_int_equal(percent_encode(" ", 1, &small), -ENOBUFS);
	buf_free(&small);
}

/* ---- mem_find ---- */

static void test_mem_find(void **state)
{
	static const struct {
		struct bytes hay, needle;
		long at;
	} v[] = {
		{ B(""), B("a"), -1 },        { B("ab"), B("abc"), -1 },
		{ B("abc"), B("abd"), -1 },   { B("aaab"), B("aab"), 1 },
		{ B("abc"), B(""), 0 },       { B(""), B(""), 0 },
		{ B("abc"), B("abc"), 0 },    { B("xxabc"), B("abc"), 2 },
		{ B("ab\0cd"), B("\0c"), 2 }, { B("ghp_x ghp_kwPLACE"), B("ghp_kw"), 6 },
		{ B("ABC"), B("abc"), -1 }, /* case matters */
	};
	for (size_t i = 0; i < ARRAY_SIZE(v); i++)
		assert_int_equal(mem_find(v[i].hay.p, v[i].hay.n, v[i].needle.p, v[i].needle.n), v[i].at);
}

/* ---- json ---- */

static char *json_of(const char *s, size_t n)
{
	struct buf b;
	buf_init(&b, 4096);
	assert_int_equal(json_str(&b, s, n), 0);
	return b.data;
}

static void test_json_str_escapes(void **state)
{
	static const struct {
		struct bytes in;
		const char *out;
	} v[] = {
		{ B(""), "\"\"" },
		{ B("plain text"), "\"plain text\"" },
		{ B("a\"b\\c/d"), "\"a\\\"b\\\\c/d\"" },
		{ B("\n\r\t"), "\"\\n\\r\\t\"" },
		{ B("\x01\x08\x0c\x1b\x1f"), "\"\\u0001\\u0008\\u000c\\u001b\\u001f\"" },
		{ B("\0x"), "\"\\u0000x\"" },
		{ B("\x7f"), "\"\x7f\"" }, /* DEL is legal in JSON strings */
		/* Valid multibyte UTF-8 is kept as is. */
		{ B("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf"),
		  "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"" },
		{ B("\xe2\x80\xa8"), "\"\xe2\x80\xa8\"" },
		/* Not UTF-8: each byte as \u00XX. */
		{ B("\xff"), "\"\\u00ff\"" },
		{ B("\x80"), "\"\\u0080\"" },   /* lone continuation */
		{ B("\xc3"), "\"\\u00c3\"" },   /* cut short at the end */
		{ B("\xc3x"), "\"\\u00c3x\"" }, /* cut short mid-string */
		{ B("\xe2\x82"), "\"\\u00e2\\u0082\"" },
		{ B("\xc0\x80"), "\"\\u00c0\\u0080\"" },                       /* overlong NUL */
		{ B("\xc1\xbf"), "\"\\u00c1\\u00bf\"" },                       /* overlong */
		{ B("\xe0\x80\xaf"), "\"\\u00e0\\u0080\\u00af\"" },            /* overlong '/' */
		{ B("\xf0\x80\x80\xaf"), "\"\\u00f0\\u0080\\u0080\\u00af\"" }, /* overlong */
		{ B("\xed\xa0\x80"), "\"\\u00ed\\u00a0\\u0080\"" },            /* surrogate */
		{ B("\xf4\x90\x80\x80"), "\"\\u00f4\\u0090\\u0080\\u0080\"" }, /* > U+10FFFF */
		{ B("\xf8\x88\x80\x80\x80"), "\"\\u00f8\\u0088\\u0080\\u0080\\u0080\"" },
		{ B("a\xffz\xc3\xa9"), "\"a\\u00ffz\xc3\xa9\"" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(v); i++) {
		char *got = json_of(v[i].in.p, v[i].in.n);
		if (strcmp(got, v[i].out) != 0)
			fail_msg("case %zu: got %s, want %s", i, got, v[i].out);
		free(got);
	}
}

/* json_str steps over plain text 8 bytes at a time: each byte that needs
 * care, at every place in strings of every length around a word or two,
 * is found and written as a string of it alone would be. */
static void test_json_str_specials_at_every_offset(void **state)
{
	static const struct {
		unsigned char c;
		const char *out;
	} sp[] = {
		{ '"', "\\\"" },     { '\\', "\\\\" }, { '\n', "\\n" },     { 0x01, "\\u0001" },
		{ 0x1f, "\\u001f" }, { 0x7f, "\x7f" }, { 0xff, "\\u00ff" }, { 0x80, "\\u0080" },
		{ ' ', " " },        { '!', "!" },     { 0x5b, "[" },       { 0x5d, "]" },
	};
	for (size_t k = 0; k < ARRAY_SIZE(sp); k++)
		for (size_t len = 1; len <= 24; len++)
			for (size_t pos = 0; pos < len; pos++) {
				char in[24], want[64];
				memset(in, 'a', len);
				in[pos] = (char)sp[k].c;
				snprintf(want, sizeof(want), "\"%.*s%s%.*s\"", (int)pos, in, sp[k].out,
				         (int)(len - pos - 1), in + pos + 1);
				char *got = json_of(in, len);
				if (strcmp(got, want) != 0)
					fail_msg("byte 0x%02x at %zu of %zu: got %s, want %s", sp[k].c, pos, len, got,
					         want);
				free(got);
			}
}

/* Whatever the bytes, the output is one line of valid JSON that jansson
 * reads back: the property the audit log depends on. Invalid bytes come
 * back as U+00XX, valid text unchanged. */
static void test_json_str_always_valid(void **state)
{
	uint32_t x = 99;
	for (int round = 0; round < 2000; round++) {
		unsigned char in[64];
		size_t n = (size_t)(round % 64);
		for (size_t i = 0; i < n; i++) {
			x = x * 1103515245 + 12345;
			in[i] = (unsigned char)(x >> 16);
			/* Bias towards the interesting ranges. */
			if (round % 3 == 0)
				in[i] |= 0x80;
		}
		char *got = json_of((const char *)in, n);
		assert_null(strchr(got, '\n'));
		json_error_t err;
		json_t *v = json_loads(got, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
		if (!v)
			fail_msg("round %d: %s: %s", round, got, err.text);
		assert_true(json_is_string(v));
		json_decref(v);
		free(got);
	}
}

static void test_json_writers(void **state)
{
	struct buf b;
	bool first = true;
	buf_init(&b, 256);
	assert_int_equal(buf_append(&b, "{", 1), 0);
	assert_int_equal(json_kv_str(&b, &first, "a", "x\"y"), 0);
	assert_int_equal(json_kv_int(&b, &first, "n", INT64_MIN), 0);
	assert_int_equal(json_kv_int(&b, &first, "m", INT64_MAX), 0);
	assert_int_equal(json_kv_str(&b, &first, "z", NULL), 0);
	assert_int_equal(buf_append(&b, "}", 1), 0);
	assert_string_equal(b.data, "{\"a\":\"x\\\"y\",\"n\":-9223372036854775808,"
	                            "\"m\":9223372036854775807,\"z\":null}");
	buf_reset(&b);
	assert_int_equal(json_cstr(&b, NULL), 0);
	assert_string_equal(b.data, "null");
	buf_reset(&b);
	assert_int_equal(json_str(&b, NULL, 0), 0);
	assert_string_equal(b.data, "\"\"");
	buf_reset(&b);
	/* buf_put_int writes what printf("%" PRId64) would. */
	static const int64_t ints[] = { 0, -1, 9, 10, -10, 1234567890123, INT64_MIN + 1, INT64_MIN, INT64_MAX };
	for (size_t i = 0; i < ARRAY_SIZE(ints); i++) {
		char want[32];
		snprintf(want, sizeof(want), "%" PRId64, ints[i]);
		buf_reset(&b);
		assert_int_equal(buf_put_int(&b, ints[i]), 0);
		assert_string_equal(b.data, want);
	}
	buf_free(&b);
	buf_init(&b, 3);
	assert_int_equal(buf_put_int(&b, 1234), -ENOBUFS);
	assert_int_equal(b.len, 0);
	buf_free(&b);

	/* The ceiling holds: 2 quotes + 6 per control byte. */
	buf_init(&b, 13);
	assert_int_equal(json_str(&b, "\x01\x02\x03", 3), -ENOBUFS);
	buf_free(&b);
	buf_init(&b, 14);
	assert_int_equal(json_str(&b, "\x01\x02", 2), 0);
	assert_int_equal(b.len, 14);
	buf_free(&b);

	/* A member fits a buffer of exactly its size, and not one byte less;
	 * a failed append leaves what was there. */
	for (size_t max = 12; max <= 13; max++) {
		first = false;
		buf_init(&b, max);
		assert_int_equal(json_kv_str(&b, &first, "key", "a\"b"), max == 13 ? 0 : -ENOBUFS);
		if (max == 13)
			assert_string_equal(b.data, ",\"key\":\"a\\\"b\"");
		buf_free(&b);
	}
	first = true;
	buf_init(&b, 5);
	assert_int_equal(json_kv_int(&b, &first, "n", 1), 0);
	assert_string_equal(b.data, "\"n\":1");
	assert_int_equal(buf_put_int(&b, 2), -ENOBUFS);
	assert_string_equal(b.data, "\"n\":1");
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64_decode_rejects),
		cmocka_unit_test(test_base64_vectors),
		cmocka_unit_test(test_base64_round_trip),
		cmocka_unit_test(test_base64_decode_lenient_pad_bits),
		cmocka_unit_test(test_base64_ceiling),
		cmocka_unit_test(test_buf_wipe_grows_like_any_buffer),
		cmocka_unit_test(test_hex),
		cmocka_unit_test(test_percent_decode_rejects),
		cmocka_unit_test(test_percent_decode),
		cmocka_unit_test(test_percent_encode),
		cmocka_unit_test(test_mem_find),
		cmocka_unit_test(test_json_str_escapes),
		cmocka_unit_test(test_json_str_always_valid),
		cmocka_unit_test(test_json_writers),
		cmocka_unit_test(test_json_str_specials_at_every_offset),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
