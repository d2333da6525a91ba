/* A worker's mailbox: the one way another thread reaches a worker's
 * event loop.
 *
 * A worker's event base takes no locks (EVENT_BASE_FLAG_NOLOCK): every
 * event_add, event_del and event_active of a request would otherwise take
 * and drop the base's mutex, some thirty times a request, for the rare
 * moments when another thread needs the worker (a token fetch that ended,
 * the proxy stopping). Those threads post a letter instead: it is queued
 * under the mailbox's own lock and an eventfd wakes the loop, which runs
 * the letter's callback on the worker's thread.
 *
 * A letter belongs to whoever made it. It must stay valid until its
 * callback has run, or be taken back with mailbox_cancel first; posting a
 * letter that is already queued does nothing. */
#pragma once

#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/queue.h>

#include "common/util.h"

struct letter {
	TAILQ_ENTRY(letter) link;
	void (*fn)(void *arg); /* runs on the worker's thread */
	void *arg;
	bool queued; /* under the mailbox's lock */
};

struct mailbox {
	pthread_mutex_t lock;
	TAILQ_HEAD(, letter) queue;
	size_t n;         /* letters queued */
	int fd;           /* eventfd: non-zero while letters wait */
	struct event *ev; /* base's read event on fd */
	bool made;        /* mailbox_init ran: a zeroed mailbox holds nothing */
};

/* Makes mb's eventfd and its event on base (the worker's). Returns 0 or a
 * negative errno; mailbox_clear undoes either outcome. */
int mailbox_init(struct mailbox *mb, struct event_base *base) WUR;
/* Frees what mailbox_init made; letters still queued are dropped unrun.
 * Only once no other thread can post. A zeroed mailbox (a worker whose
 * set-up stopped before it) is left alone. */
void mailbox_clear(struct mailbox *mb);
/* From any thread: queues l (unless it is queued) and wakes the loop. */
void mailbox_post(struct mailbox *mb, struct letter *l);
/* Takes l back if it is still queued: its callback will not run. */
void mailbox_cancel(struct mailbox *mb, struct letter *l);
