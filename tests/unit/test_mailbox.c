/* A worker's mailbox (src/proxy/mailbox.h) on a real event base without
 * locks: letters posted from another thread run on the loop's thread; a
 * letter posted twice runs once; a cancelled one never runs, even when a
 * letter delivered before it cancels it; a letter posted again by its own
 * callback runs on the next wake, not in a loop. */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy/mailbox.h"

struct fixture {
	struct event_base *base;
	struct mailbox mb;
};

static int setup(void **state)
{
	static struct fixture f;
	struct event_config *cfg = event_config_new();
	assert_non_null(cfg);
	assert_int_equal(event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK), 0);
	f.base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	assert_non_null(f.base);
	assert_int_equal(mailbox_init(&f.mb, f.base), 0);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	mailbox_clear(&f->mb);
	event_base_free(f->base);
	return 0;
}

struct counted {
	int runs;
	pthread_t ran_on;
	struct letter *cancel; /* count: cancelled by the callback; repost_self: its own letter */
	struct mailbox *mb;
};

static void count(void *arg)
{
	struct counted *c = arg;
	c->runs++;
	c->ran_on = pthread_self();
	if (c->cancel)
		mailbox_cancel(c->mb, c->cancel);
}

/* Runs the loop until nothing is ready (the mailbox's event is always
 * pending, so EVLOOP_NONBLOCK rather than "until empty"). */
static void run_ready(struct fixture *f)
{
	assert_int_not_equal(event_base_loop(f->base, EVLOOP_NONBLOCK), -1);
}

struct poster {
	struct mailbox *mb;
	struct letter *l;
};

static void *post_from_thread(void *arg)
{
	struct poster *p = arg;
	mailbox_post(p->mb, p->l);
	return NULL;
}

static void test_nothing_posted_nothing_runs(void **state)
{
	struct fixture *f = *state;
	run_ready(f);
	assert_int_equal(f->mb.n, 0);
}

static void test_post_from_another_thread_runs_on_the_loop(void **state)
{
	struct fixture *f = *state;
	struct counted c = { 0 };
	struct letter l = { .fn = count, .arg = &c };
	struct poster p = { &f->mb, &l };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, post_from_thread, &p), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(l.queued);
	run_ready(f);
	assert_int_equal(c.runs, 1);
	assert_true(pthread_equal(c.ran_on, pthread_self()));
	assert_false(l.queued);
	run_ready(f); /* delivered once only */
	assert_int_equal(c.runs, 1);
}

static void test_posted_twice_runs_once(void **state)
{
	struct fixture *f = *state;
	struct counted c = { 0 };
	struct letter l = { .fn = count, .arg = &c };
	mailbox_post(&f->mb, &l);
	mailbox_post(&f->mb, &l);
	assert_int_equal(f->mb.n, 1);
	run_ready(f);
	assert_int_equal(c.runs, 1);
	assert_int_equal(f->mb.n, 0);
}

static void test_cancelled_never_runs(void **state)
{
	struct fixture *f = *state;
	struct counted a = { 0 }, b = { 0 };
	struct letter la = { .fn = count, .arg = &a }, lb = { .fn = count, .arg = &b };
	mailbox_post(&f->mb, &la);
	mailbox_post(&f->mb, &lb);
	mailbox_cancel(&f->mb, &la);
	mailbox_cancel(&f->mb, &la); /* not queued: nothing */
	assert_false(la.queued);
	run_ready(f);
	assert_int_equal(a.runs, 0);
	assert_int_equal(b.runs, 1);
}

static void test_cancelled_by_an_earlier_letter(void **state)
{
	struct fixture *f = *state;
	struct counted a = { 0 }, b = { 0 };
	struct letter lb = { .fn = count, .arg = &b };
	struct letter la = { .fn = count, .arg = &a };
	a.cancel = &lb;
	a.mb = &f->mb;
	mailbox_post(&f->mb, &la);
	mailbox_post(&f->mb, &lb);
	run_ready(f);
	assert_int_equal(a.runs, 1);
	assert_int_equal(b.runs, 0);
	assert_int_equal(f->mb.n, 0);
}

static void repost_self(void *arg)
{
	struct counted *c = arg;
	c->runs++;
	if (c->runs < 3)
		mailbox_post(c->mb, c->cancel);
}

static void test_reposted_by_itself_runs_on_the_next_wake(void **state)
{
	struct fixture *f = *state;
	struct counted c = { .mb = &f->mb };
	struct letter l = { .fn = repost_self, .arg = &c };
	c.cancel = &l;
	mailbox_post(&f->mb, &l);
	assert_int_not_equal(event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK), -1);
	assert_int_equal(c.runs, 1); /* not run again within the same delivery */
	assert_true(l.queued);
	run_ready(f);
	run_ready(f);
	assert_int_equal(c.runs, 3);
	assert_false(l.queued);
}

static void test_clear_drops_what_is_queued(void **state)
{
	struct fixture *f = *state;
	struct counted c = { 0 };
	struct letter l = { .fn = count, .arg = &c };
	mailbox_post(&f->mb, &l);
	mailbox_clear(&f->mb);
	assert_int_equal(mailbox_init(&f->mb, f->base), 0);
	run_ready(f);
	assert_int_equal(c.runs, 0);
}

/* free_worker clears the mailbox of every worker, also of those whose
 * set-up stopped before mailbox_init (zeroed: fd 0). */
static void test_clear_of_a_zeroed_mailbox_closes_nothing(void **state)
{
	(void)state;
	int fd = open("/dev/null", O_RDONLY);
	assert_true(fd >= 0);
	int saved = dup(0);
	assert_true(dup2(fd, 0) == 0); /* descriptor 0 open, whatever the runner gave */
	struct mailbox mb = { 0 };
	mailbox_clear(&mb);
	mailbox_clear(&mb);
	assert_true(fcntl(0, F_GETFD) >= 0);
	if (saved >= 0) {
		dup2(saved, 0);
		close(saved);
	}
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_nothing_posted_nothing_runs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_post_from_another_thread_runs_on_the_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_posted_twice_runs_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancelled_never_runs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancelled_by_an_earlier_letter, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reposted_by_itself_runs_on_the_next_wake, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clear_drops_what_is_queued, setup, teardown),
		cmocka_unit_test(test_clear_of_a_zeroed_mailbox_closes_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
