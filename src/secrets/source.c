#include "secrets/source.h"

#include <errno.h>
#include <stdio.h>

#include "secrets/private_file.h"
#include "secrets/vault.h"

/* Every source's value goes through secret_value_check: a secret is put in
 * header lines, so a CR or LF in it could split a request. */
static int check_value(const struct policy_credential *c, const struct secret *s, char *errbuf, size_t errlen)
{
	char why[128];
	int r = secret_value_check(s->data, s->len, why, sizeof(why));
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

int source_fetch(const struct policy_credential *c, struct secret **ret, char *errbuf, size_t errlen)
{
	_cleanup_secret_ struct secret *s = NULL;
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
	default:
		snprintf(errbuf, errlen, "credential %s: unknown source", c->name);
		return -EINVAL;
	}
	if (r < 0)
		return r;
	r = check_value(c, s, errbuf, errlen);
	if (r < 0)
		return r;
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
