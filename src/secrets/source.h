/* Where a credential's secret comes from: keyward's own environment, a
 * file or the vault. The value is checked to be safe in an HTTP header (no CR, LF, NUL
 * or other control bytes) so that it can never split a request. */
#pragma once

#include "common/secret.h"
#include "policy/policy.h"

/* Fetches the secret of credential c. Returns 0 and *ret, or a negative
 * errno and a message in errbuf that names the credential and source but
 * never the value. */
int source_fetch(const struct policy_credential *c, struct secret **ret, char *errbuf, size_t errlen) WUR;
