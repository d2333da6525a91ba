/* The redaction set of a generation: every secret it holds, in the forms
 * redact_set_add_secret knows, mapped to its credential's placeholder.
 * Responses of every credentialed route are scanned for all of them, not
 * only for the route's own: an upstream that knows another credential
 * (or a route that reaches a service holding it) must not hand it to the
 * sandbox either. */
#include "common/log.h"
#include "proxy/internal.h"

static struct redact_set *build(const struct gen *g)
{
	struct redact_set *s;
	if (redact_set_new(&s) < 0)
		return NULL;
	int r = 0;
	for (size_t i = 0; r == 0 && i < g->policy->n_creds; i++) {
		const struct secret *sec = g->secrets[i];
		if (sec)
			r = redact_set_add_secret(s, sec->data, sec->len, g->policy->creds[i].placeholder);
	}
	if (r == 0)
		r = redact_set_seal(s);
	if (r < 0) {
		log_error("cannot build the response redaction set: %s", strerror(-r));
		redact_set_free(s);
		return NULL;
	}
	return s;
}

const struct redact_set *gen_redact_set(struct gen *g)
{
	if (atomic_load_explicit(&g->redact_built, memory_order_acquire))
		return g->redact;
	pthread_mutex_lock(&g->redact_lock);
	if (!atomic_load_explicit(&g->redact_built, memory_order_relaxed)) {
		g->redact = build(g);
		if (g->redact)
			atomic_store_explicit(&g->redact_built, true, memory_order_release);
	}
	pthread_mutex_unlock(&g->redact_lock);
	return g->redact;
}
