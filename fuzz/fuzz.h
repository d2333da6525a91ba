/* Shared by every harness: the libFuzzer entry point and an invariant check
 * that survives NDEBUG.
 *
 * A harness feeds one input to one parser, the way keyward's own callers
 * do, and checks properties that must hold for every input. A violated
 * property aborts, which libFuzzer and the replay driver both report as a
 * crash with the input that caused it. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Invariants that an open finding breaks (docs/fuzzing.md) can be relaxed
 * with -DFUZZ_PENDING=0 so that fuzzing goes on past it; by default every
 * invariant is checked (all findings so far are fixed). */
#ifndef FUZZ_PENDING
#define FUZZ_PENDING 1
#endif

#define fuzz_assert(cond)                                                                              \
	do {                                                                                           \
		if (!(cond)) {                                                                         \
			fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                                       \
		}                                                                                      \
	} while (0)

/* A heap copy of exactly n bytes (at least one byte allocated), so that
 * AddressSanitizer catches a read one past the end, which a copy into a
 * larger or NUL-terminated buffer would hide. Aborts on allocation failure. */
static inline char *fuzz_dup_exact(const void *p, size_t n)
{
	char *q = malloc(n ? n : 1);
	if (!q)
		abort();
	for (size_t i = 0; i < n; i++)
		q[i] = ((const char *)p)[i];
	return q;
}

/* n zero bytes on the heap, exactly (at least one byte allocated). */
static inline char *fuzz_alloc_exact(size_t n)
{
	char *q = calloc(n ? n : 1, 1);
	if (!q)
		abort();
	return q;
}

/* A NUL-terminated heap copy. */
static inline char *fuzz_strndup(const void *p, size_t n)
{
	char *q = malloc(n + 1);
	if (!q)
		abort();
	for (size_t i = 0; i < n; i++)
		q[i] = ((const char *)p)[i];
	q[n] = '\0';
	return q;
}
