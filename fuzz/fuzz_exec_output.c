/* The output of an exec: source's command (src/secrets/exec.h): any bytes,
 * raw value or JSON with an RFC 3339 expires_at.
 *
 * Properties:
 *  - success writes a value no longer than the input and an expiry; failure
 *    writes neither and gives a reason;
 *  - a reason never holds the input's bytes when they are long enough to be
 *    a secret (it quotes nothing of the output);
 *  - a raw value (no leading "{") is the input less at most one trailing
 *    newline (and CR). */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "secrets/exec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	struct secret *s = NULL;
	int64_t exp = -1;
	char why[200] = "";
	int r = exec_output_parse(in, size, &s, &exp, why, sizeof(why));
	if (r < 0) {
		fuzz_assert(r == -EINVAL && !s && exp == -1 && why[0]);
		if (size >= 24)
			fuzz_assert(!memmem(why, strlen(why), in, 24));
		return 0;
	}
	fuzz_assert(s && s->len <= size && s->data[s->len] == '\0');
	size_t i = 0;
	while (i < size && (in[i] == ' ' || in[i] == '\t' || in[i] == '\n' || in[i] == '\r'))
		i++;
	if (!(i < size && in[i] == '{')) {
		fuzz_assert(exp == 0 && size - s->len <= 2 && memcmp(s->data, in, s->len) == 0);
	}
	/* a time that parses is in the range timegm gives */
	int64_t t;
	if (size < 64) {
		char buf[64];
		memcpy(buf, in, size);
		buf[size] = '\0';
		if (exec_parse_time(buf, &t) == 0)
			fuzz_assert(t > -62167219200000LL && t < 253402300800000LL);
	}
	secret_free(s);
	return 0;
}
