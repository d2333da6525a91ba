/* trust_check against trails written here: the spans a file's ctime falls
 * in, the entries on its way (links, folders, `..`), roots that are files,
 * runs that still go on or were killed, the pins, and a damaged trail. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "policy/trust.h"

struct fx {
	char top[PATH_MAX], state[PATH_MAX], ws[PATH_MAX], err[2 * PATH_MAX + 512];
};

static void put(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int64_t ctime_of(const char *path)
{
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	return (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
}

/* A span of the trail: a run that could write `root` from..to (to < 0:
 * no end noted), as keyward's pid/start time `started` in this boot. */
static void span(const struct fx *f, const char *id, int64_t from, int64_t to, const char *root, long long started)
{
	char path[PATH_MAX + 32], boot[64] = "";
	FILE *b = fopen("/proc/sys/kernel/random/boot_id", "r");
	if (b && fgets(boot, sizeof(boot), b))
		boot[strcspn(boot, "\n")] = '\0';
	if (b)
		fclose(b);
	snprintf(path, sizeof(path), "%s/%s", f->state, TRUST_TRAIL);
	FILE *t = fopen(path, "a");
	assert_non_null(t);
	fprintf(t, "{\"run\":\"%s\",\"from\":%lld,\"pid\":%d,\"started\":%lld,\"boot\":\"%s\",\"write\":[\"%s\"]}\n",
	        id, (long long)from, (int)getpid(), started, boot, root);
	if (to >= 0)
		fprintf(t, "{\"run\":\"%s\",\"to\":%lld}\n", id, (long long)to);
	fclose(t);
}

static long long my_start(void)
{
	char line[1024];
	FILE *f = fopen("/proc/self/stat", "r");
	assert_non_null(f);
	size_t n = fread(line, 1, sizeof(line) - 1, f);
	fclose(f);
	line[n] = '\0';
	char *p = strrchr(line, ')');
	for (int field = 2; p && *p; p++)
		if (*p == ' ' && ++field == 22)
			return strtoll(p + 1, NULL, 10);
	return -1;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->top, sizeof(f->top), "/tmp/kw-trust-XXXXXX");
	assert_non_null(mkdtemp(f->top));
	snprintf(f->state, sizeof(f->state), "%s/state", f->top);
	snprintf(f->ws, sizeof(f->ws), "%s/ws", f->top);
	assert_int_equal(mkdir(f->state, 0700), 0);
	assert_int_equal(mkdir(f->ws, 0755), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->top);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static int check(struct fx *f, const char *name)
{
	f->err[0] = '\0';
	return trust_check(f->state, name, f->err, sizeof(f->err));
}

static void test_changed_in_a_span_is_refused(void **state)
{
	struct fx *f = *state;
	char pol[PATH_MAX + 16];
	snprintf(pol, sizeof(pol), "%s/p.yaml", f->ws);
	put(pol, "version: 1\n");
	int64_t c = ctime_of(pol);
	span(f, "before", c - 3000000000, c - 2000000000, f->ws, 1); /* ended before the file changed */
	assert_int_equal(check(f, pol), 0);
	/* the pin taken then is for that file as it was: a span covering its
	 * ctime, noted later, does not undo it */
	span(f, "covering", c - 1000, c + 1000, f->ws, 1);
	assert_int_equal(check(f, pol), 0);
	/* a change makes it looked at again */
	put(pol, "version: 1\n# again\n");
	int64_t c2 = ctime_of(pol);
	span(f, "covering2", c2 - 1000, c2 + 1000, f->ws, 1);
	assert_int_equal(check(f, pol), -EPERM);
	assert_non_null(strstr(f->err, "CMD may have written it"));
	assert_non_null(strstr(f->err, "keyward policy trust"));
	/* trusted by the user: taken as it is */
	assert_int_equal(trust_policy(f->state, pol, f->err, sizeof(f->err)), 0);
	assert_int_equal(check(f, pol), 0);
}

static void test_only_places_the_sandbox_could_write(void **state)
{
	struct fx *f = *state;
	char other[PATH_MAX + 16], pol[PATH_MAX + 32], sibling[PATH_MAX + 16];
	snprintf(other, sizeof(other), "%s/other", f->top);
	snprintf(sibling, sizeof(sibling), "%s/ws2", f->top); /* shares the prefix "ws" */
	assert_int_equal(mkdir(other, 0755), 0);
	assert_int_equal(mkdir(sibling, 0755), 0);
	snprintf(pol, sizeof(pol), "%s/p.yaml", other);
	put(pol, "version: 1\n");
	int64_t c = ctime_of(pol);
	span(f, "run", c - 1000, c + 1000, f->ws, 1);
	assert_int_equal(check(f, pol), 0);
	snprintf(pol, sizeof(pol), "%s/p.yaml", sibling);
	put(pol, "version: 1\n");
	c = ctime_of(pol);
	span(f, "run2", c - 1000, c + 1000, f->ws, 1);
	assert_int_equal(check(f, pol), 0);
	/* the workspace folder's own ctime moves with all CMD does: not a sign */
	snprintf(pol, sizeof(pol), "%s/q.yaml", f->ws);
	put(pol, "version: 1\n");
	struct timespec pause = { 0, 20 * 1000 * 1000 };
	nanosleep(&pause, NULL);
	char made[PATH_MAX + 16];
	snprintf(made, sizeof(made), "%s/made-by-cmd", f->ws);
	put(made, "x");
	assert_true(ctime_of(f->ws) > ctime_of(pol));
	span(f, "run3", ctime_of(pol) + 1, ctime_of(f->ws) + 1000, f->ws, 1);
	assert_int_equal(check(f, pol), 0);
	/* a root that is the policy file itself (a read_write file) */
	span(f, "run4", ctime_of(pol) - 1000, ctime_of(pol) + 1000, pol, 1);
	char rel[PATH_MAX + 64];
	snprintf(rel, sizeof(rel), "%s/./q.yaml", f->ws);
	put(pol, "version: 1\n#\n");
	span(f, "run5", ctime_of(pol) - 1000, ctime_of(pol) + 1000, pol, 1);
	assert_int_equal(check(f, rel), -EPERM);
}

static void test_links_and_folders_on_the_way(void **state)
{
	struct fx *f = *state;
	char conf[PATH_MAX + 16], real[PATH_MAX + 32], link[PATH_MAX + 16], outside[PATH_MAX + 16];
	char outpol[PATH_MAX + 32];
	snprintf(outside, sizeof(outside), "%s/outside", f->top);
	assert_int_equal(mkdir(outside, 0755), 0);
	snprintf(outpol, sizeof(outpol), "%s/p.yaml", outside);
	put(outpol, "version: 1\n");
	int64_t old = ctime_of(outpol);
	struct timespec pause = { 0, 20 * 1000 * 1000 };
	nanosleep(&pause, NULL); /* file times move by clock ticks */
	/* a link in the workspace, made while a sandbox ran, leads outside to
	 * an older file: the link is what counts */
	snprintf(link, sizeof(link), "%s/cfg", f->ws);
	assert_int_equal(symlink(outside, link), 0);
	span(f, "run", ctime_of(link) - 1000, ctime_of(link) + 1000, f->ws, 1);
	assert_true(ctime_of(link) > old);
	char name[PATH_MAX + 32];
	snprintf(name, sizeof(name), "%s/cfg/p.yaml", f->ws);
	assert_int_equal(check(f, name), -EPERM);
	assert_non_null(strstr(f->err, link));
	/* a folder on the way changed in a span (here by a chmod: a rename
	 * changes it the same way), the file in it did not; reached through
	 * `..` as well */
	snprintf(conf, sizeof(conf), "%s/conf", f->ws);
	assert_int_equal(mkdir(conf, 0755), 0);
	snprintf(real, sizeof(real), "%s/conf/p.yaml", f->ws);
	put(real, "version: 1\n");
	nanosleep(&pause, NULL);
	assert_int_equal(chmod(conf, 0750), 0);
	assert_true(ctime_of(conf) > ctime_of(real));
	span(f, "run2", ctime_of(real) + 1, ctime_of(conf) + 1, f->ws, 1);
	snprintf(name, sizeof(name), "%s/conf/../conf/p.yaml", f->ws);
	assert_int_equal(check(f, name), -EPERM);
	assert_non_null(strstr(f->err, conf));
	/* the same file by a way that does not go through it passes */
	char alias[PATH_MAX + 16];
	snprintf(alias, sizeof(alias), "%s/alias.yaml", outside);
	assert_int_equal(symlink(real, alias), 0);
	nanosleep(&pause, NULL);
	assert_int_equal(check(f, alias), -EPERM); /* its target's folder is conf all the same */
}

/* A span whose root has another name (a bind mount of the workspace
 * elsewhere): the trail holds the root's device and inode too. */
static void test_a_root_by_another_name(void **state)
{
	struct fx *f = *state;
	char pol[PATH_MAX + 16], path[PATH_MAX + 32];
	struct stat ws;
	snprintf(pol, sizeof(pol), "%s/p.yaml", f->ws);
	put(pol, "version: 1\n");
	assert_int_equal(stat(f->ws, &ws), 0);
	snprintf(path, sizeof(path), "%s/%s", f->state, TRUST_TRAIL);
	FILE *t = fopen(path, "a");
	assert_non_null(t);
	fprintf(t,
	        "{\"run\":\"bind\",\"from\":%lld,\"pid\":1,\"started\":1,\"boot\":\"\",\"write\":[\"/elsewhere/ws\"],"
	        "\"ids\":[[%lld,%lld]]}\n{\"run\":\"bind\",\"to\":%lld}\n",
	        (long long)(ctime_of(pol) - 1000), (long long)ws.st_dev, (long long)ws.st_ino,
	        (long long)(ctime_of(pol) + 1000));
	fclose(t);
	assert_int_equal(check(f, pol), -EPERM);
	assert_non_null(strstr(f->err, "/elsewhere/ws"));
	/* the folder itself, by that other name, is no sign: a file beside it passes */
	char other[PATH_MAX + 16];
	snprintf(other, sizeof(other), "%s/beside.yaml", f->top);
	put(other, "version: 1\n");
	assert_int_equal(check(f, other), 0);
}

static void test_runs_without_an_end(void **state)
{
	struct fx *f = *state;
	char pol[PATH_MAX + 16], path[PATH_MAX + 32];
	snprintf(pol, sizeof(pol), "%s/p.yaml", f->ws);
	/* a run that still goes on (this process): every later change counts */
	span(f, "alive", 1, -1, f->ws, my_start());
	put(pol, "version: 1\n");
	assert_int_equal(check(f, pol), -EPERM);
	/* a run whose keyward is gone (another start time): taken to have
	 * written until found gone, and that end noted */
	snprintf(path, sizeof(path), "%s/%s", f->state, TRUST_TRAIL);
	assert_int_equal(unlink(path), 0);
	span(f, "killed", 1, -1, f->ws, my_start() + 1);
	assert_int_equal(check(f, pol), -EPERM);
	FILE *t = fopen(path, "r");
	char line[512];
	int ends = 0;
	while (t && fgets(line, sizeof(line), t))
		ends += strstr(line, "\"to\"") != NULL;
	if (t)
		fclose(t);
	assert_int_equal(ends, 1);
	/* a change after that end passes */
	struct timespec pause = { 0, 20 * 1000 * 1000 };
	nanosleep(&pause, NULL);
	put(pol, "version: 1\n# later\n");
	assert_int_equal(check(f, pol), 0);
}

static void test_damaged_trail_and_odd_names(void **state)
{
	struct fx *f = *state;
	char pol[PATH_MAX + 16], path[PATH_MAX + 32];
	snprintf(pol, sizeof(pol), "%s/p.yaml", f->ws);
	put(pol, "version: 1\n");
	snprintf(path, sizeof(path), "%s/%s", f->state, TRUST_TRAIL);
	/* lines that are not records are skipped; the good ones still count */
	put(path, "garbage\n{\"run\":1}\n[]\n{\"run\":\"x\",\"from\":\"a\",\"write\":[\"/\"]}\n");
	span(f, "good", ctime_of(pol) - 1000, ctime_of(pol) + 1000, f->ws, 1);
	assert_int_equal(check(f, pol), -EPERM);
	/* nothing there: the loader says so */
	snprintf(path, sizeof(path), "%s/absent.yaml", f->ws);
	assert_int_equal(check(f, path), 0);
	/* a loop of links */
	char a[PATH_MAX + 16], b[PATH_MAX + 16];
	snprintf(a, sizeof(a), "%s/a", f->ws);
	snprintf(b, sizeof(b), "%s/b", f->ws);
	assert_int_equal(symlink(b, a), 0);
	assert_int_equal(symlink(a, b), 0);
	assert_int_equal(check(f, a), 0); /* stat fails: nothing to take */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_changed_in_a_span_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_only_places_the_sandbox_could_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_links_and_folders_on_the_way, setup, teardown),
		cmocka_unit_test_setup_teardown(test_a_root_by_another_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_runs_without_an_end, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_trail_and_odd_names, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
