#include "common/state.h"

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

static int mkdir_parents(const char *path, mode_t mode)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int state_dir(char *out, size_t outlen, bool create, char *errbuf, size_t errlen)
{
	const char *home = getenv("KEYWARD_HOME");
	const char *xdg = getenv("XDG_DATA_HOME");
	const char *user = getenv("HOME");
	int n;

	if (home && *home)
		n = snprintf(out, outlen, "%s", home);
	else if (xdg && *xdg == '/')
		n = snprintf(out, outlen, "%s/keyward", xdg);
	else if (user && *user == '/')
		n = snprintf(out, outlen, "%s/.local/share/keyward", user);
	else {
		snprintf(errbuf, errlen, "cannot find a state directory: set KEYWARD_HOME or HOME");
		return -ENOENT;
	}
	if (n < 0 || (size_t)n >= outlen) {
		snprintf(errbuf, errlen, "state directory path is too long");
		return -ENAMETOOLONG;
	}
	if (!create)
		return 0;

	int r = mkdir_parents(out, 0700);
	if (r < 0) {
		snprintf(errbuf, errlen, "%s: cannot create state directory: %s", out, strerror(-r));
		return r;
	}
	struct stat st;
	if (stat(out, &st) < 0) {
		r = -errno;
		snprintf(errbuf, errlen, "%s: %s", out, strerror(errno));
		return r;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(errbuf, errlen, "%s: state directory is not a directory", out);
		return -ENOTDIR;
	}
	if (st.st_mode & 077) {
		snprintf(errbuf, errlen,
		         "%s: state directory is accessible by group or others (mode %03o); fix with: chmod 700 %s",
		         out, st.st_mode & 0777, out);
		return -EPERM;
	}
	return 0;
}
