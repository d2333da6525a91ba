/* Responses as an upstream sends them back: see http1_drive.c. */
#include "fuzz.h"
#include "http1_drive.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_http1(HTTP1_RESPONSE, data, size);
	return 0;
}
