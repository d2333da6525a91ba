/* seccomp: the system-call fence of the sandbox. A deny list on top of the
 * namespaces: it narrows the kernel surface that untrusted code can reach,
 * so that escaping takes more than one mistake or kernel bug. */
#pragma once

#include <linux/filter.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

/* Installs keyward's sandbox seccomp filter on the calling process (it must
 * be single-threaded: the filter is not synchronised to other threads), and
 * through it on every process it starts. Sets PR_SET_NO_NEW_PRIVS first.
 * Everything not listed is allowed; listed calls fail with EPERM, except:
 * clone3 and openat2 fail with ENOSYS (glibc and programs then fall back to
 * clone and openat, whose flags and mode the filter can read), and socket/socketpair of a family other than AF_UNIX,
 * AF_INET or AF_INET6 fail with EAFNOSUPPORT (what a kernel without that
 * family answers). A call made through another ABI (32-bit int 0x80, x32)
 * kills the process. The rules are listed in seccomp.c.
 *
 * Returns 0, or a negative errno with the reason in errbuf (errbuf may be
 * NULL). On failure the process may already carry part of the filter: the
 * caller must not run untrusted code, only report and exit. */
int sandbox_seccomp_install(char *errbuf, size_t errlen) WUR;

/* The deny list and the arch it was built for, written at build time by
 * seccomp-gen (seccomp_gen.c) from libseccomp. */
extern const struct sock_filter seccomp_deny_filter[];
extern const size_t seccomp_deny_filter_len;
extern const uint32_t seccomp_native_arch;
