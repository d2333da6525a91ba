/* The HTTP/1 harnesses drive src/proxy/http1.h the way src/proxy/conn.c
 * does; this is the shared driver. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "proxy/http1.h"

void fuzz_http1(enum http1_type type, const uint8_t *data, size_t size);
