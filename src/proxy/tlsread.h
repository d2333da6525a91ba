/* Reading an open TLS connection (a bufferevent_openssl over a socket, its
 * handshake done) into its bufferevent's input buffer, in place of
 * libevent's own reading. A sockread (sockread.h) in TLS mode: the same
 * struct, enable, disable, timeout and stop; only its event's callback
 * differs.
 *
 * libevent 2.1's TLS bufferevent needs OpenSSL's read-ahead off: it stops
 * reading once SSL_pending() is 0, which does not count records read
 * ahead and not yet decrypted, so they would wait for the next packet.
 * Without read-ahead OpenSSL reads each record in two read(2) calls, its
 * 5-byte header and then its body. A tlsread turns read-ahead on (one
 * read(2) takes what the socket holds) and decrypts with SSL_read until
 * OpenSSL holds nothing more (SSL_has_pending(), which counts the bytes
 * read ahead too, is 0) or needs the socket (SSL_ERROR_WANT_READ): then
 * whatever it has not decrypted is in the kernel, and epoll reports it.
 * The bufferevent's callbacks run as libevent ran them: the read callback
 * once after the bytes of a wake-up; the event callback with
 * BEV_EVENT_READING and EOF (close_notify, or the dirty shutdowns that
 * bufferevent_openssl_set_allow_dirty_shutdown allows, classified as
 * libevent does), ERROR or TIMEOUT, reading turned off first. An end found
 * after bytes in the same wake-up is reported on the next pass of the
 * loop, after the read callback had the bytes, as two reads of a plain
 * socket would. Writing stays the bufferevent's; an SSL_read that must
 * write first into a full socket (SSL_ERROR_WANT_WRITE, which OpenSSL 3.0
 * does not give with renegotiation refused) waits for the socket to take
 * bytes, then reads on.
 *
 * OpenSSL's errors are taken off the thread's queue and not kept: after
 * the handshake nothing asks bufferevent_get_openssl_error for them.
 *
 * A callback may free the bufferevent and the sockread: nothing is
 * touched after a callback returns. */
#pragma once

#include "proxy/sockread.h"

/* What one wake-up decrypts at most before the loop runs other events:
 * records left in OpenSSL past it are taken on the next pass. */
#define TLSREAD_BUDGET (4 * SOCKREAD_MAX)

/* Starts reading bev, a TLS bufferevent whose handshake is done, with r;
 * bev's own reading is turned off, and r's is on if bev's was. Bytes
 * OpenSSL holds already are read on this pass of the loop. timed: one
 * whose timeout is set for each message (an upstream's), kept on a timer
 * of its own as sockread_start's is. Returns 0, or -EINVAL (no TLS, or
 * the handshake not done) or -ENOMEM; then r is untouched and bev still
 * reads itself, as it did: a caller may go on. */
int tlsread_start(struct sockread *r, struct event_base *base, struct bufferevent *bev, bool timed);
