/* The audit log: one JSON line per decision, append-only, hash-chained.
 *
 * Each line is a JSON object whose "prev" member is the lower-case hex
 * SHA-256 of the previous line's bytes (without its newline); the first
 * line of a file has 64 zeros. "seq" counts up by one from 0 across the
 * whole file, also across restarts. `keyward audit verify` recomputes the
 * chain and names the first line that breaks it. A record never holds a
 * secret value: callers pass names, hosts and paths only.
 *
 * The writer is safe to call from several threads. */
#pragma once

#include <stdint.h>
#include <stdio.h>

#include "common/util.h"

/* An allowed request gets two records: its decision ("request", decision
 * "allow"), written before anything is forwarded, and its "result" when it
 * ends, naming the decision by request_seq. A request refused before it
 * was allowed gets one "request" record holding both. */
struct audit_record {
	const char *event;    /* "request", "result", "connect", "start", "stop", "reload", "rotate" */
	uint64_t request_seq; /* "result": seq of the request's decision record */
	const char *listener; /* e.g. "127.0.0.1:8080", "unix:/run/k.sock" */
	const char *client;   /* peer address, or NULL */
	const char *method;   /* NULL for non-request events */
	const char *scheme;   /* "http" / "https" */
	const char *host;
	int port;               /* 0: omitted */
	const char *path;       /* the normalised path that was checked (no query) */
	int route;              /* 0-based route index, -1: none */
	const char *credential; /* credential name, or NULL */
	const char *decision;   /* "allow", "deny", "error" (or NULL for events) */
	const char *reason;     /* short machine word: "host", "method", "leak"... */
	const char *detail;     /* human sentence, or NULL */
	int status;             /* HTTP status sent to the client, 0 = none */
	bool totals;            /* the request is over: write the three below */
	uint64_t bytes_in;      /* request body bytes from the client */
	uint64_t bytes_out;     /* response body bytes to the client */
	uint64_t duration_us;
	uint64_t redacted; /* secrets replaced in the response; 0: omitted */
};

struct audit_log;

/* Opens (creating with mode 0600) the log at path for appending. Reads the
 * last line to continue its chain: a file whose last line is incomplete or
 * not a valid record is refused (-EBADMSG), so a damaged log is noticed
 * rather than silently extended. Returns 0 and *ret, or negative errno
 * (message written to errbuf). */
int audit_open(const char *path, struct audit_log **ret, char *errbuf, size_t errlen) WUR;
/* audit_open in two steps: audit_reserve opens, creates and locks the file
 * (cheap, no OpenSSL); audit_load then reads its last line and readies the
 * digest, and must succeed before the log is written to. On failure of
 * audit_load the log is still to be closed with audit_close. */
int audit_reserve(const char *path, struct audit_log **ret, char *errbuf, size_t errlen) WUR;
int audit_load(struct audit_log *log, char *errbuf, size_t errlen) WUR;
/* Flushes and closes; NULL is a no-op. */
void audit_close(struct audit_log *log);

/* Appends one record. The line is written with a single write(2) and the
 * file is left exactly as before on failure (a partial write is truncated
 * away). Returns 0 or negative errno; after a failure audit_healthy() is
 * false until a later write succeeds. */
int audit_write(struct audit_log *log, const struct audit_record *rec) WUR;

/* Records made by one thread and written together. audit_batch_add
 * escapes and cuts a record's strings without any lock; audit_batch_write
 * then takes the log's lock once for the whole batch, gives the records
 * their seq, time and chain hash in order, and appends them all with one
 * write(2). A batch is used by one thread at a time. */
struct audit_batch;

/* A new, empty batch (caller's; audit_batch_free). Returns 0 or -ENOMEM. */
int audit_batch_new(struct audit_batch **ret) WUR;
/* NULL is a no-op. Records still in the batch are dropped. */
void audit_batch_free(struct audit_batch *b);
/* Formats rec into b (rec and its strings stay the caller's). Returns its
 * index in the batch (0, 1, …: it will get seq first + index), -ENOBUFS
 * when b is full (write it, then add again: an empty batch takes any
 * record), -EINVAL or -ENOMEM; on failure b is as it was. */
int audit_batch_add(struct audit_batch *b, const struct audit_record *rec) WUR;
size_t audit_batch_count(const struct audit_batch *b);
/* Appends b's records to the log, in order, with a single write(2), and
 * empties b. Returns 0 and *ret_first_seq, the seq of the record at index
 * 0; or negative errno: then none of them is in the file (a partial write
 * is truncated away), they took no seq, and audit_healthy() is false until
 * a later write succeeds. An empty batch writes nothing. */
int audit_batch_write(struct audit_log *log, struct audit_batch *b, uint64_t *ret_first_seq) WUR;
/* False after a failed write: callers must then refuse to serve (503). */
bool audit_healthy(struct audit_log *log);

/* ---- verify.c ---- */

/* Checks every line's JSON, seq and chain. Prints a summary (or the first
 * bad line: "FILE:LINE: ...") to out. Returns 0 if intact, -EBADMSG if
 * not, other negative errno if it could not be read. */
int audit_verify(const char *path, FILE *out) WUR;
/* Prints the log for people: one aligned line per record. Returns 0 or
 * negative errno. */
int audit_show(const char *path, FILE *out) WUR;
