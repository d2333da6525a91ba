/* A worker's mailbox (mailbox.h). */
#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "proxy/mailbox.h"

/* On the worker's thread: one letter at a time, each taken off the queue
 * under the lock before its callback runs, so that a callback may cancel
 * or free any other letter, or post this one again. Only the letters
 * queued when it starts: one posted meanwhile runs on the next wake, which
 * its post has written. */
static void deliver(evutil_socket_t fd, short what, void *arg)
{
	struct mailbox *mb = arg;
	uint64_t count;
	/* Reset the count first: a post after this read wakes the loop again. */
	(void)!read(fd, &count, sizeof(count));
	pthread_mutex_lock(&mb->lock);
	size_t n = mb->n;
	pthread_mutex_unlock(&mb->lock);
	while (n--) {
		pthread_mutex_lock(&mb->lock);
		struct letter *l = TAILQ_FIRST(&mb->queue);
		if (l) {
			TAILQ_REMOVE(&mb->queue, l, link);
			l->queued = false;
			mb->n--;
		}
		pthread_mutex_unlock(&mb->lock);
		if (!l)
			return;
		l->fn(l->arg);
	}
}

int mailbox_init(struct mailbox *mb, struct event_base *base)
{
	*mb = (struct mailbox){ .fd = -1, .made = true };
	pthread_mutex_init(&mb->lock, NULL);
	TAILQ_INIT(&mb->queue);
	mb->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (mb->fd < 0)
		return -errno;
	mb->ev = event_new(base, mb->fd, EV_READ | EV_PERSIST, deliver, mb);
	if (!mb->ev || event_add(mb->ev, NULL) < 0)
		return -ENOMEM;
	return 0;
}

void mailbox_clear(struct mailbox *mb)
{
	/* Descriptor 0 of a zeroed one is the process's standard input. */
	if (!mb->made)
		return;
	mb->made = false;
	if (mb->ev)
		event_free(mb->ev);
	mb->ev = NULL;
	if (mb->fd >= 0)
		close(mb->fd);
	mb->fd = -1;
	pthread_mutex_destroy(&mb->lock);
}

void mailbox_post(struct mailbox *mb, struct letter *l)
{
	static const uint64_t one = 1;
	pthread_mutex_lock(&mb->lock);
	bool wake = !l->queued;
	if (wake) {
		TAILQ_INSERT_TAIL(&mb->queue, l, link);
		l->queued = true;
		mb->n++;
	}
	pthread_mutex_unlock(&mb->lock);
	/* Cannot fail but by overflowing the counter (2^64 - 2 posts unread),
	 * and then the loop is woken already. */
	if (wake)
		(void)!write(mb->fd, &one, sizeof(one));
}

void mailbox_cancel(struct mailbox *mb, struct letter *l)
{
	pthread_mutex_lock(&mb->lock);
	if (l->queued) {
		TAILQ_REMOVE(&mb->queue, l, link);
		l->queued = false;
		mb->n--;
	}
	pthread_mutex_unlock(&mb->lock);
}
