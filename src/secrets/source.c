#include "secrets/source.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>

#include <openssl/crypto.h>

#include "common/encode.h"
#include "secrets/exec.h"
#include "secrets/private_file.h"
#include "secrets/vault.h"

/* A GitHub App's private key is PEM, lines of base64, and is never written
 * into a request: it only signs the JWT that asks for a token (mint.c). */
static bool is_pem_part(const struct policy_credential *c)
{
	return c->parent && c->parent->kind == CRED_GITHUB_APP && c->parent->parts[GITHUB_APP_PRIVATE_KEY] == c;
}

static int pem_value_check(const struct secret *s, char *why, size_t whylen)
{
	if (s->len == 0) {
		snprintf(why, whylen, "is empty");
		return -ENODATA;
	}
	for (size_t i = 0; i < s->len; i++) {
		unsigned char ch = s->data[i];
		if ((ch < 0x20 && ch != '\n' && ch != '\r') || ch >= 0x7f) {
			snprintf(why, whylen,
			         "is not a PEM private key (byte %zu is neither printable ASCII nor a line break)", i);
			return -EINVAL;
		}
	}
	return 0;
}

bool source_placeholder_holds(const char *ph, const struct secret *s)
{
	size_t n = strlen(ph);
	if (!s)
		return false;
	if (n == s->len)
		return CRYPTO_memcmp(ph, s->data, n) == 0;
	return s->len >= SOURCE_PLACEHOLDER_MIN && mem_find(ph, n, (const char *)s->data, s->len) >= 0;
}

const struct policy_credential *source_placeholder_holding(const struct policy *p, const struct secret *s)
{
	for (size_t k = 0; k < p->n_creds; k++)
		if (source_placeholder_holds(p->creds[k].placeholder, s))
			return &p->creds[k];
	return NULL;
}

const char *source_label(const struct policy_credential *c, char *buf, size_t n)
{
	if (c->source == SOURCE_EXEC)
		return "its exec: command";
	snprintf(buf, n, "%s:%s", policy_source_name(c->source), c->source_arg);
	return buf;
}

/* Every source's value goes through secret_value_check: a secret is put in
 * header lines, so a CR or LF in it could split a request. */
static int check_value(const struct policy_credential *c, const struct secret *s, char *errbuf, size_t errlen)
{
	char why[128], label[300];
	int r = is_pem_part(c) ? pem_value_check(s, why, sizeof(why))
	                       : secret_value_check(s->data, s->len, why, sizeof(why));
	if (r < 0)
		snprintf(errbuf, errlen, "credential %s: the secret from %s %s", c->name,
		         source_label(c, label, sizeof(label)), why);
	return r;
}

static int fetch_env(const struct policy_credential *c, struct secret **ret, char *errbuf, size_t errlen)
{
	const char *v = getenv(c->source_arg);
	if (!v) {
		snprintf(errbuf, errlen, "credential %s: environment variable %s is not set", c->name, c->source_arg);
		return -ENOENT;
	}
	return secret_new(v, strlen(v), ret);
}

int source_pins_open(const struct policy *p, struct source_pin **ret)
{
	struct source_pin *pins = calloc(p->n_creds + 1, sizeof(*pins));
	if (!pins)
		return -ENOMEM;
	for (size_t i = 0; i < p->n_creds; i++) {
		char e[512];
		pins[i] = (struct source_pin){ .dirfd = -1 };
		if (p->creds[i].source != SOURCE_FILE)
			continue;
		int fd = private_dir_open(p->creds[i].source_arg, e, sizeof(e));
		if (fd == -ENOMEM) {
			source_pins_free(pins, i);
			return -ENOMEM;
		}
		if (fd < 0)
			pins[i].err = fd; /* told by every read (fetch_file) */
		else
			pins[i].dirfd = fd;
	}
	*ret = pins;
	return 0;
}

void source_pins_free(struct source_pin *pins, size_t n)
{
	for (size_t i = 0; pins && i < n; i++)
		if (pins[i].dirfd >= 0)
			close(pins[i].dirfd);
	free(pins);
}

static int fetch_file(const struct policy_credential *c, const struct source_pin *pin, struct secret **ret,
                      char *errbuf, size_t errlen)
{
	char e[512];
	int r;
	if (pin && pin->err < 0) {
		snprintf(errbuf, errlen,
		         "credential %s: %s: its folder could not be opened when the policy was loaded: %s", c->name,
		         c->source_arg, strerror(-pin->err));
		return pin->err;
	}
	if (pin)
		r = secret_file_readat(pin->dirfd, private_file_name(c->source_arg), c->source_arg, SECRET_MAX, true,
		                       ret, e, sizeof(e));
	else
		r = secret_file_read(c->source_arg, SECRET_MAX, true, ret, e, sizeof(e));
	if (r < 0)
		snprintf(errbuf, errlen, "credential %s: %s", c->name, e);
	return r;
}

static int fetch_vault(const struct policy_credential *c, struct secret **ret, char *errbuf, size_t errlen)
{
	char e[512];
	int r = vault_get(c->source_arg, ret, e, sizeof(e));
	if (r < 0)
		snprintf(errbuf, errlen, "credential %s: %s", c->name, e);
	return r;
}

static int fetch_exec(const struct policy_credential *c, struct secret **ret, int64_t *ret_expires_ms, char *errbuf,
                      size_t errlen)
{
	char e[512];
	_cleanup_secret_ struct secret *s = NULL;
	int64_t expires = 0;
	int r = exec_fetch(c->source_arg, &s, &expires, e, sizeof(e));
	if (r < 0) {
		snprintf(errbuf, errlen, "credential %s: exec: %s", c->name, e);
		return r;
	}
	if (expires && expires <= exec_now_ms()) {
		snprintf(errbuf, errlen, "credential %s: exec: the value its command printed has expired already",
		         c->name);
		return -EKEYEXPIRED;
	}
	*ret_expires_ms = expires;
	*ret = TAKE_PTR(s);
	return 0;
}

int source_fetch(const struct policy_credential *c, const struct source_pin *pin, struct secret **ret, char *errbuf,
                 size_t errlen)
{
	int64_t refresh;
	return source_fetch_timed(c, pin, ret, &refresh, errbuf, errlen);
}

int source_fetch_timed(const struct policy_credential *c, const struct source_pin *pin, struct secret **ret,
                       int64_t *ret_refresh_ms, char *errbuf, size_t errlen)
{
	_cleanup_secret_ struct secret *s = NULL;
	int64_t expires = 0;
	int r;

	switch (c->source) {
	case SOURCE_ENV:
		r = fetch_env(c, &s, errbuf, errlen);
		break;
	case SOURCE_FILE:
		r = fetch_file(c, pin, &s, errbuf, errlen);
		break;
	case SOURCE_VAULT:
		r = fetch_vault(c, &s, errbuf, errlen);
		break;
	case SOURCE_EXEC:
		r = fetch_exec(c, &s, &expires, errbuf, errlen);
		break;
	default:
		snprintf(errbuf, errlen, "credential %s: unknown source", c->name);
		return -EINVAL;
	}
	if (r >= 0)
		r = check_value(c, s, errbuf, errlen);
	if (r < 0) {
		*ret_refresh_ms = c->source == SOURCE_EXEC ? exec_now_ms() + EXEC_RETRY_MS : 0;
		return r;
	}
	*ret_refresh_ms = exec_refresh_at(exec_now_ms(), expires);
	*ret = TAKE_PTR(s);
	return 0;
}

void source_stamp(const struct policy_credential *c, const struct source_pin *pin, struct source_stamp *ret)
{
	struct stat st;
	int r;

	*ret = (struct source_stamp){ 0 };
	switch (c->source) {
	case SOURCE_FILE:
		if (pin && pin->err < 0) {
			ret->err = pin->err;
			return;
		}
		/* the same file fetch_file opens: through the pinned folder, and
		 * a link is not followed */
		if (fstatat(pin ? pin->dirfd : AT_FDCWD, pin ? private_file_name(c->source_arg) : c->source_arg, &st,
		            AT_SYMLINK_NOFOLLOW) < 0)
			r = -errno;
		else
			r = 0;
		break;
	case SOURCE_VAULT:
		r = vault_stat(&st);
		break;
	default:
		return;
	}
	if (r < 0) {
		ret->err = r;
		return;
	}
	ret->dev = st.st_dev;
	ret->ino = st.st_ino;
	ret->mtim = st.st_mtim;
	ret->size = st.st_size;
}

bool source_stamp_eq(const struct source_stamp *a, const struct source_stamp *b)
{
	return a->err == b->err && a->dev == b->dev && a->ino == b->ino && a->mtim.tv_sec == b->mtim.tv_sec &&
	       a->mtim.tv_nsec == b->mtim.tv_nsec && a->size == b->size;
}
