/* `from: exec:COMMAND`: the credential_process convention of AWS and git.
 * keyward runs `/bin/sh -c COMMAND` outside any sandbox, with its own
 * environment, stdin /dev/null and stderr /dev/null (a command may print
 * the secret there, so it is never read, let alone logged), and takes the
 * secret from its standard output: either the value itself (one trailing
 * newline dropped), or a JSON object {"value": "...", "expires_at":
 * "RFC 3339 time"}. Nothing secret is ever passed in argv or the
 * environment. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/secret.h"
#include "common/util.h"

/* The longest a command may run, then its process group is killed. */
#define EXEC_TIMEOUT_MS 10000
/* The most standard output read from a command. */
#define EXEC_OUTPUT_MAX (64 * 1024)
/* How long after a failure the command is run again. */
#define EXEC_RETRY_MS 10000

/* Parses n bytes of a command's output (untrusted: any bytes). A first
 * non-blank byte `{` means JSON: an object with a string "value" and an
 * optional string "expires_at"; anything else is the value itself, less
 * one trailing "\n" or "\r\n". Returns 0, *ret (the caller frees it) and
 * *ret_expires_ms (Unix milliseconds, 0 when the output names no expiry),
 * or -EINVAL with the reason in why, which never quotes the output. The
 * value is not checked here (secret_value_check). */
int exec_output_parse(const char *out, size_t n, struct secret **ret, int64_t *ret_expires_ms, char *why,
                      size_t whylen) WUR;

/* Parses an RFC 3339 date-time ("2026-11-23T12:34:56Z",
 * "2026-11-23T12:34:56.5+01:00") into Unix milliseconds. Returns 0 or
 * -EINVAL. */
int exec_parse_time(const char *s, int64_t *ret_ms) WUR;

/* When a value fetched at now_ms that expires at expires_ms should be
 * fetched again: a tenth of its remaining life early, at most 60 s early,
 * so a short-lived token is renewed before it lapses and a long-lived one
 * not much sooner than needed. 0 (never) when expires_ms is 0. */
int64_t exec_refresh_at(int64_t now_ms, int64_t expires_ms);

/* Runs command and parses its output as above. Blocks the calling thread
 * for at most EXEC_TIMEOUT_MS: never call it on a worker's event loop.
 * Returns 0, *ret and *ret_expires_ms, or a negative errno with a message
 * in errbuf (exit status, signal, timeout, too much output, malformed
 * output) that never quotes the output. */
int exec_fetch(const char *command, struct secret **ret, int64_t *ret_expires_ms, char *errbuf, size_t errlen) WUR;

/* The environment commands run with from now on (NULL: keyward's own).
 * Set before any command runs, while keyward has one thread; envp is
 * borrowed for the process's life. `keyward run` sets one without the
 * variables that name a place its sandbox can write (cmd_run.c). */
void exec_set_environ(char **envp);

/* For the stop: every command still running is killed (its process group)
 * and its exec_fetch returns -ECANCELED at once; later calls do too. Safe
 * from any thread. */
void exec_abort(void);

/* The current time in Unix milliseconds. */
int64_t exec_now_ms(void);
