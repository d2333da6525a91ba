/* TLS on both sides of the proxy.
 *
 * Towards the sandbox: keyward's CA mints a leaf certificate per host
 * (ECDSA P-256, SAN = that host), cached, so that a CONNECT tunnel can be
 * opened and the requests inside checked. The CA key never leaves this
 * process (a 0600 file in the state directory for `keyward proxy`).
 * Towards upstreams: always verified against the system roots plus an
 * optional extra CA file; there is no way to turn verification off. */
#pragma once

#include <event2/bufferevent.h>
#include <openssl/ssl.h>
#include <stdbool.h>

#include "common/util.h"

struct tls_ca;

/* Loads dir/ca.pem and dir/ca-key.pem, creating both on first use. The key
 * file must not be readable by group or others. */
int tls_ca_load_or_create(const char *dir, struct tls_ca **ret, char *errbuf, size_t errlen) WUR;
/* A CA that lives only in memory (for one `keyward run`). Its certificate
 * can be handed out at once; tls_ca_new_leaf_key must succeed before it
 * serves a handshake (the leaf key is made apart so that the certificate
 * reaches the sandbox a key generation sooner). */
int tls_ca_new_ephemeral(struct tls_ca **ret) WUR;
int tls_ca_new_leaf_key(struct tls_ca *ca) WUR;
void tls_ca_free(struct tls_ca *ca);
/* The CA certificate as PEM; the caller frees the string. */
char *tls_ca_cert_pem(const struct tls_ca *ca);

/* A server context for intercepted tunnels (ALPN http/1.1 only). */
SSL_CTX *tls_server_ctx_new(void);
/* Makes a server SSL for a tunnel to host (a name or IP literal): sets the
 * minted leaf and remembers host, so that a ClientHello whose SNI names a
 * different host fails the handshake. It reads ahead, from its handshake
 * on: keyward's reading (tlsread_start) must take over when the handshake
 * ends. Returns NULL on failure. */
SSL *tls_server_ssl_new(SSL_CTX *ctx, struct tls_ca *ca, const char *host);
/* Whether the handshake on ssl was refused because of an SNI mismatch. */
bool tls_server_sni_mismatch(SSL *ssl);

/* Takes EPOLLOUT off bev, a TLS bufferevent over a socket (libevent 2.1),
 * when nothing is queued on it: for a handshake that has not begun, or
 * once it has opened. libevent registers its write event at both moments
 * whether or not it has anything to write; see tls.c. */
void tls_bev_idle_write_off(struct bufferevent *bev);

/* A client context that verifies upstreams against the system roots and,
 * if extra_pem is not NULL, the CAs in that PEM text (tls_ca_file_read). */
SSL_CTX *tls_client_ctx_new(const char *extra_pem, size_t extra_len, char *errbuf, size_t errlen);
/* Reads a PEM file of CA certificates (at most 4 MiB) into *ret_pem
 * (malloc'ed, NUL-terminated) once it is known to hold at least one that a
 * client context can load (checked without loading the system roots). */
int tls_ca_file_read(const char *path, char **ret_pem, size_t *ret_len, char *errbuf, size_t errlen) WUR;
/* A client SSL for host: SNI (names only) and host name or IP verification. */
SSL *tls_client_ssl_new(SSL_CTX *ctx, const char *host);

/* Describes the last TLS error on this thread (for audit "detail"). */
void tls_error_string(char *out, size_t outlen);
