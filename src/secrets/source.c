#include "secrets/source.h"

#include <errno.h>
#include <stdio.h>

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

/* Every source's value goes through secret_value_check: a secret is put in
 * header lines, so a CR or LF in it could split a request. */
static int check_value(const struct policy_credential *c, const struct secret *s, char *errbuf, size_t errlen)
{
	char why[128];
	int r = is_pem_part(c) ? pem_value_check(s, why, sizeof(why))
	                       : secret_value_check(s->data, s->len, why, sizeof(why));
	if (r < 0)
		snprintf(errbuf, errlen, "credential %s: the secret from %s:%s %s", c->name,
		         policy_source_name(c->source), c->source_arg, why);
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

static int fetch_file(const struct policy_credential *c, struct secret **ret, char *errbuf, size_t errlen)
{
	char e[512];
	int r = secret_file_read(c->source_arg, SECRET_MAX, true, ret, e, sizeof(e));
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
		snprintf(errbuf, errlen, "credential %s: exec:%s: %s", c->name, c->source_arg, e);
		return r;
	}
	if (expires && expires <= exec_now_ms()) {
		snprintf(errbuf, errlen, "credential %s: exec:%s: the value it printed has expired already", c->name,
		         c->source_arg);
		return -EKEYEXPIRED;
	}
	*ret_expires_ms = expires;
	*ret = TAKE_PTR(s);
	return 0;
}

int source_fetch(const struct policy_credential *c, struct secret **ret, char *errbuf, size_t errlen)
{
	int64_t refresh;
	return source_fetch_timed(c, ret, &refresh, errbuf, errlen);
}

int source_fetch_timed(const struct policy_credential *c, struct secret **ret, int64_t *ret_refresh_ms, char *errbuf,
                       size_t errlen)
{
	_cleanup_secret_ struct secret *s = NULL;
	int64_t expires = 0;
	int r;

	switch (c->source) {
	case SOURCE_ENV:
		r = fetch_env(c, &s, errbuf, errlen);
		break;
	case SOURCE_FILE:
		r = fetch_file(c, &s, errbuf, errlen);
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

void source_stamp(const struct policy_credential *c, struct source_stamp *ret)
{
	char path[4096], e[512];
	struct stat st;

	*ret = (struct source_stamp){ 0 };
	switch (c->source) {
	case SOURCE_FILE:
		snprintf(path, sizeof(path), "%s", c->source_arg);
		break;
	case SOURCE_VAULT:
		if (vault_path(path, sizeof(path), e, sizeof(e)) < 0) {
			ret->err = -ENOENT;
			return;
		}
		break;
	default:
		return;
	}
	if (stat(path, &st) < 0) {
		ret->err = -errno;
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
