/* keyward's state directory: $KEYWARD_HOME, else $XDG_DATA_HOME/keyward,
 * else ~/.local/share/keyward. Holds the vault, key file and the CA of
 * `keyward proxy`; created 0700 on first use. */
#pragma once

#include <stddef.h>

#include "common/util.h"

/* Writes the directory's path to out. With create, makes it (and missing
 * parents) with mode 0700 and refuses one that others can read.
 * Returns 0 or negative errno (message in errbuf). */
int state_dir(char *out, size_t outlen, bool create, char *errbuf, size_t errlen) WUR;
