#include "proxy/ratelimit.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Enough for every route and credential of a large policy, twice over. */
#define TABLE_SLOTS 16384
#define KEY_MAX     320

struct bucket {
	bool used;
	char key[KEY_MAX];
	double tokens;
	uint64_t last_ns;
};

struct rate_table {
	pthread_mutex_t lock;
	size_t n_used;
	struct bucket *slots; /* TABLE_SLOTS, open addressing */
};

int rate_table_new(struct rate_table **ret)
{
	struct rate_table *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->slots = calloc(TABLE_SLOTS, sizeof(*t->slots));
	if (!t->slots) {
		free(t);
		return -ENOMEM;
	}
	pthread_mutex_init(&t->lock, NULL);
	*ret = t;
	return 0;
}

void rate_table_free(struct rate_table *t)
{
	if (!t)
		return;
	pthread_mutex_destroy(&t->lock);
	free(t->slots);
	free(t);
}

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

/* The bucket named key, made full if new. Called with the lock held. */
static struct bucket *bucket_get(struct rate_table *t, const char *key, const struct policy_quota *q, uint64_t now_ns)
{
	size_t i = fnv1a(key) % TABLE_SLOTS;
	for (;;) {
		struct bucket *b = &t->slots[i];
		if (!b->used)
			break;
		if (strncmp(b->key, key, KEY_MAX) == 0)
			return b;
		i = (i + 1) % TABLE_SLOTS;
	}
	struct bucket *b = &t->slots[i];
	b->used = true;
	snprintf(b->key, sizeof(b->key), "%s", key);
	b->tokens = (double)q->burst;
	b->last_ns = now_ns;
	t->n_used++;
	return b;
}

static void refill(struct bucket *b, const struct policy_quota *q, uint64_t now_ns)
{
	if (now_ns > b->last_ns) {
		double per_ns = (double)q->rate_count / ((double)q->rate_period_s * 1e9);
		b->tokens += (double)(now_ns - b->last_ns) * per_ns;
		b->last_ns = now_ns;
	}
	if (b->tokens > (double)q->burst)
		b->tokens = (double)q->burst; /* also when a reload lowered burst */
}

bool rate_take(struct rate_table *t, const struct rate_want *want, size_t n, uint64_t now_ns, size_t *ret_which,
               uint64_t *ret_retry_s)
{
	struct bucket *got[8];
	bool ok = true;
	if (n > ARRAY_SIZE(got))
		n = ARRAY_SIZE(got);
	pthread_mutex_lock(&t->lock);
	if (t->n_used + n > TABLE_SLOTS / 2) {
		/* Only reloads with ever new keys get here: start again (before
		 * any bucket of this call is looked up, so none moves under it). */
		memset(t->slots, 0, TABLE_SLOTS * sizeof(*t->slots));
		t->n_used = 0;
	}
	for (size_t i = 0; i < n; i++) {
		got[i] = NULL;
		if (!want[i].q->rate_count)
			continue;
		got[i] = bucket_get(t, want[i].key, want[i].q, now_ns);
		refill(got[i], want[i].q, now_ns);
		if (got[i]->tokens < 1.0 && ok) {
			double secs =
			    (1.0 - got[i]->tokens) * (double)want[i].q->rate_period_s / (double)want[i].q->rate_count;
			uint64_t retry = (uint64_t)secs;
			if ((double)retry < secs)
				retry++;
			*ret_which = i;
			*ret_retry_s = retry < 1 ? 1 : retry;
			ok = false;
		}
	}
	for (size_t i = 0; ok && i < n; i++)
		if (got[i])
			got[i]->tokens -= 1.0;
	pthread_mutex_unlock(&t->lock);
	return ok;
}
