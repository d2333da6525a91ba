/* A minimal JSON writer for records we build on the hot path (audit lines,
 * denial bodies): appends to a bounded struct buf, escaping per RFC 8259.
 * Parsing JSON (audit verify) uses jansson. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"

/* Appends "s" as a JSON string (quotes included). Bytes that are not valid
 * UTF-8 are written as \u00XX of the byte, so the output is always valid. */
int json_str(struct buf *b, const char *s, size_t n) WUR;
int json_cstr(struct buf *b, const char *s) WUR; /* NULL writes null */
/* The length of the NUL-terminated s if json_str would write all of it as
 * it is (printable ASCII but '"' and '\\') and it is at most max bytes
 * long; otherwise SIZE_MAX. Looks at max + 1 bytes at most. */
size_t json_plain_len(const char *s, size_t max);
/* Appends ,"key": (or "key": when first) then the value. */
int json_kv_str(struct buf *b, bool *first, const char *key, const char *val) WUR;
/* The same with the value's length known (n bytes, not NUL-terminated). */
int json_kv_strn(struct buf *b, bool *first, const char *key, const char *val, size_t n) WUR;
int json_kv_int(struct buf *b, bool *first, const char *key, int64_t val) WUR;
