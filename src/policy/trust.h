/* Whether a policy file is the user's, not a sandbox's.
 *
 * A policy decides where credentials go, and its exec: commands run on the
 * host. A sandbox writes its workspace and its read_write paths, and a
 * file there may be CMD's: one it created, changed, or put in place of the
 * user's by renaming a folder or a link on the way to it. keyward keeps a
 * trail in its state directory (which no sandbox sees) of where each
 * sandbox could write and when (trust_sandbox_begin, trust_sandbox_end),
 * and refuses a policy file whose status changed (its ctime, which no
 * program can set) in such a place while such a sandbox ran, or that is
 * reached through a link or folder that did, until the user says it is
 * theirs (trust_policy: `keyward policy trust`). A file that passes is
 * remembered as it is (device, inode, ctime) under the name it was opened
 * by, and is not looked at again until it changes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

#define TRUST_TRAIL "sandbox-trail"    /* in the state directory */
#define TRUST_PINS  "trusted-policies" /* in the state directory */

struct trust_run {
	int fd;     /* the trail, open for appending; -1: nothing written */
	char *line; /* the note, until it is written */
	char id[48];
};

/* Notes, in memory, that a sandbox may write under roots[0..n) (real
 * paths) from now on. Returns 0 or -ENOMEM. */
int trust_sandbox_note(struct trust_run *t, const char *const *roots, size_t n) WUR;

/* Writes the note to the trail and makes it durable (fdatasync): before
 * CMD can start, as late as that allows, for a write to the file system
 * costs the start of a run more while the CA is made. Returns 0, or a
 * negative errno with the reason in errbuf (the run must not go on: a
 * later check could not see what this sandbox wrote). */
int trust_sandbox_begin(struct trust_run *t, const char *state, char *errbuf, size_t errlen) WUR;

/* Notes that the sandbox can write no more, if it was noted to: once
 * every process of it is gone. Frees the note and closes the trail. */
void trust_sandbox_end(struct trust_run *t);

/* Whether the policy file name (as the caller opens it: relative to the
 * current folder, or absolute) may be taken. Returns 0; -EPERM when it, or
 * a link or folder on its way, changed in a place a sandbox could write
 * while it ran (errbuf says what, when, and how to accept it); another
 * negative errno when that cannot be told (errbuf says why). A name that
 * leads to nothing passes (the loader reports it). */
int trust_check(const char *state, const char *name, char *errbuf, size_t errlen) WUR;

/* Takes the file name leads to now, as it is, for the user's. Returns 0
 * or a negative errno with the reason in errbuf. */
int trust_policy(const char *state, const char *name, char *errbuf, size_t errlen) WUR;
