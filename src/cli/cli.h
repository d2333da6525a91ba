/* Subcommands: each parses its own arguments and calls the modules.
 * Return value is the process exit status: 0 success, 1 failure, 2 usage
 * or policy error. */
#pragma once

#include <pthread.h>
#include <stdbool.h>

/* `keyward run`'s status when the sandbox could not be set up. */
#define EXIT_SETUP 125

int cmd_proxy(int argc, char **argv);
int cmd_policy(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cmd_ca(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_secret(int argc, char **argv);

/* keyward's own argv (main's), for `run` to wipe in the sandbox. */
extern char **cli_argv;
extern int cli_argc;

/* OpenSSL's random generator, chosen before its first use (it cannot be
 * changed after): the Hash_DRBG of SP 800-90A over SHA-256, where OpenSSL
 * defaults to the CTR_DRBG over AES-256. Both are approved, with the same
 * 256-bit strength; the CTR_DRBG's first use builds OpenSSL's table of
 * every cipher (3M instructions, ~1 ms), which `run` would pay before its
 * CA exists and CMD may start, while SHA-256 is fetched then anyway (the
 * CA's signature, the audit chain). The TLS contexts build the cipher
 * table later, off that path. keyward_main chooses it before any command
 * that uses OpenSSL runs. */
#define CLI_DRBG        "HASH-DRBG"
#define CLI_DRBG_DIGEST "SHA256"

/* Nor does keyward build OpenSSL's legacy table of cipher names
 * (EVP_get_cipherbyname), which the first fetch of any algorithm would
 * otherwise fill and copy into the table of names that fetching uses:
 * 2.4M instructions (~0.5 ms) of the 10M that `run` spends before its CA
 * exists. keyward never looks a cipher up by a legacy name, nor does
 * OpenSSL 3's TLS (it fetches by the providers' names). The table of
 * digest names stays: certificate checks look digests up in it
 * (X509_get_signature_info, for TLS's security level), and without it no
 * leaf certificate would pass. */
#define CLI_OPENSSL_INIT OPENSSL_INIT_NO_ADD_ALL_CIPHERS

/* What the keyward executable (launch.c) hands libkeyward.so for `run`. */
struct cli_launch {
	struct sandbox *sandbox; /* cloned as keyward started */
};

/* For `run`: the sandbox the executable cloned as it started, or NULL. */
extern struct sandbox *cli_sandbox;

/* libkeyward.so's one entry point, called by the keyward executable with
 * main's arguments (launch NULL but for `run`). */
#define CLI_ENTRY "keyward_main"
typedef int cli_entry_fn(int argc, char **argv, struct cli_launch *launch);
cli_entry_fn keyward_main __attribute__((visibility("default")));

struct proxy_options;
/* Adds a --resolve HOST:ADDRESS to o; false (message printed, naming cmd)
 * when there are too many. */
bool cli_add_resolve(struct proxy_options *o, const char *arg, const char *cmd);

/* True if argv has -h or --help before any "--". */
int cli_wants_help(int argc, char **argv);
