/* Files that hold a secret or guard one: a `file:` credential, the vault,
 * its key file, a passphrase file. They are opened without following a
 * symbolic link (one could point keyward at a file the attacker chose, or
 * reveal a path), must be regular files, and are refused when group or
 * others have any access: such a secret has already leaked to them. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#include "common/secret.h"
#include "common/util.h"

/* Opens path read-only with O_NOFOLLOW and checks it as above. Returns the
 * descriptor (the caller closes it) and fills *ret_st, or a negative errno
 * with a message "PATH: ..." in errbuf that says how to fix a mode. */
int private_file_open(const char *path, struct stat *ret_st, char *errbuf, size_t errlen) WUR;

/* As private_file_open, for the entry name of the folder dirfd (AT_FDCWD:
 * name is a path); path names the file in messages. */
int private_file_openat(int dirfd, const char *name, const char *path, struct stat *ret_st, char *errbuf,
                        size_t errlen) WUR;

/* Opens the folder that holds the file at path (O_PATH), so that the file
 * can be opened again later by its last name alone (private_file_openat)
 * and stays the one in that folder, whatever is renamed or linked on the
 * way to it meanwhile. Symbolic links among the folders of path are
 * followed now: the user may keep secrets behind one (/run/secrets). Returns
 * the descriptor (O_CLOEXEC; the caller closes it) or a negative errno with
 * a message "PATH: ..." in errbuf. */
int private_dir_open(const char *path, char *errbuf, size_t errlen) WUR;

/* The last name of path (what private_file_openat opens in the folder
 * private_dir_open gave): the text after the last '/'. */
const char *private_file_name(const char *path);

/* Reads from fd until end of file or cap bytes, retrying on EINTR. Returns
 * 0 and the count in *ret_n, or a negative errno. */
int fd_read_all(int fd, void *buf, size_t cap, size_t *ret_n) WUR;

/* Reads a private file of at most max bytes (max <= SECRET_MAX) into a new
 * secret. With strip_newline, one trailing "\n" or "\r\n" is dropped
 * (editors and echo add one). The value is not checked otherwise. Returns
 * 0 and *ret (the caller frees it), or a negative errno with a message
 * "PATH: ..." that never contains the file's contents. */
int secret_file_read(const char *path, size_t max, bool strip_newline, struct secret **ret, char *errbuf,
                     size_t errlen) WUR;

/* As secret_file_read, for the entry name of the folder dirfd (AT_FDCWD:
 * name is a path); path names the file in messages. */
int secret_file_readat(int dirfd, const char *name, const char *path, size_t max, bool strip_newline,
                       struct secret **ret, char *errbuf, size_t errlen) WUR;
