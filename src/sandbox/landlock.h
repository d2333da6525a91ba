/* landlock: the file-system, TCP-port and scope fence of the sandbox
 * (Linux Landlock LSM, through its raw system calls). A second wall behind
 * the mount namespace: even a path that stays visible inside the sandbox can
 * only be used as these rules say. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

enum sandbox_access {
	SANDBOX_READ,  /* read files, list directories, execute */
	SANDBOX_WRITE, /* everything Landlock knows: also create, remove, rename, truncate, device ioctls */
};

struct sandbox_path_rule {
	const char *path; /* borrowed */
	enum sandbox_access access;
};

struct sandbox_landlock {
	/* in, borrowed: what may be used */
	const struct sandbox_path_rule *paths;
	size_t n_paths;
	const uint16_t *tcp_ports; /* TCP ports that may be connected to and bound; all others are
	                            * refused (ABI >= 4). None listed: no TCP at all. */
	size_t n_tcp_ports;
	/* out, written on success only */
	int abi;           /* the ABI that was used: the kernel's, capped at the newest keyward knows */
	char missing[256]; /* what the running kernel could not enforce, "; "-separated, for --verbose,
	                    * e.g. "TCP port rules (needs ABI 4)"; empty when nothing is missing */
};

/* Returns the kernel's Landlock ABI version, or 0 when Landlock is not
 * available (not built, or disabled at boot). */
int sandbox_landlock_abi(void);

/* Restricts the calling process (single-threaded: other threads keep their
 * rights) and its future children: file-system access only beneath the
 * listed paths, TCP connect and bind only on the listed ports, and (ABI >= 6)
 * no signals to and no abstract unix sockets of processes outside the
 * domain. Sets no_new_privs. Best effort per ABI, as the kernel
 * documentation advises: rights the running kernel lacks are not asked for,
 * and are named in ll->missing.
 *
 * A listed path that does not exist is skipped (not an error). A path that
 * is not a directory gets only the rights that apply to a file.
 *
 * Returns 0; -EOPNOTSUPP when the kernel has no Landlock at all; or another
 * negative errno with the reason in errbuf (errbuf may be NULL). On failure
 * the process is not restricted by this call, but no_new_privs may be set. */
int sandbox_landlock_apply(struct sandbox_landlock *ll, char *errbuf, size_t errlen) WUR;
