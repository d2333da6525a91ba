#include "proxy/tls.h"

#include <ctype.h>
#include <dirent.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define LEAF_CACHE_SLOTS 1024
#define LEAF_DAYS        30

struct leaf {
	char *host;
	X509 *cert;
	time_t not_after;
};

struct tls_ca {
	X509 *cert;
	EVP_PKEY *key;
	EVP_PKEY *leaf_key; /* one key for every leaf: minting stays cheap */
	pthread_mutex_t lock;
	struct leaf cache[LEAF_CACHE_SLOTS];
};

static int ex_host_index = -1;
static int ex_mismatch_index = -1;
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void ex_free_host(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	free(ptr);
}

static void ex_init(void)
{
	ex_host_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, ex_free_host);
	ex_mismatch_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

void tls_error_string(char *out, size_t outlen)
{
	unsigned long e = ERR_peek_last_error();
	if (!e) {
		snprintf(out, outlen, "TLS error");
		return;
	}
	ERR_error_string_n(e, out, outlen);
	ERR_clear_error();
}

static bool is_ip_literal(const char *host)
{
	unsigned char b[16];
	return inet_pton(AF_INET, host, b) == 1 || inet_pton(AF_INET6, host, b) == 1;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return -EINVAL;
	int ok = X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -EINVAL;
}

static int random_serial(X509 *cert)
{
	unsigned char b[16];
	if (RAND_bytes(b, sizeof(b)) != 1)
		return -EIO;
	b[0] &= 0x7f; /* positive */
	BIGNUM *bn = BN_bin2bn(b, sizeof(b), NULL);
	if (!bn)
		return -ENOMEM;
	ASN1_INTEGER *serial = BN_to_ASN1_INTEGER(bn, NULL);
	BN_free(bn);
	if (!serial)
		return -ENOMEM;
	int ok = X509_set_serialNumber(cert, serial);
	ASN1_INTEGER_free(serial);
	return ok ? 0 : -ENOMEM;
}

/* X509_set_pubkey() encodes a key through OpenSSL's encoder framework,
 * whose first use in a process costs about a millisecond, on the path of
 * every `keyward run`. The SubjectPublicKeyInfo of a P-256 key is only
 * the curve's name and the point, set here directly. The certificate then
 * has no decoded key cached (X509_get0_pubkey() gives NULL): fine for a CA
 * certificate, which keyward only signs with and hands out, not for a leaf
 * that is served (the TLS stack reads its key). */
static int set_ca_pubkey(X509 *cert, EVP_PKEY *key)
{
	unsigned char point[65], *copy = NULL; /* an uncompressed P-256 point */
	char group[32];
	size_t len = 0;
	if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL) != 1 ||
	    !streq(group, SN_X9_62_prime256v1) ||
	    EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point, sizeof(point), &len) != 1 ||
	    len != sizeof(point) || point[0] != POINT_CONVERSION_UNCOMPRESSED)
		return X509_set_pubkey(cert, key);
	X509_PUBKEY *pub = X509_get_X509_PUBKEY(cert);
	if (!pub || !(copy = OPENSSL_memdup(point, len)))
		return 0;
	if (!X509_PUBKEY_set0_param(pub, OBJ_nid2obj(NID_X9_62_id_ecPublicKey), V_ASN1_OBJECT,
	                            OBJ_nid2obj(NID_X9_62_prime256v1), copy, (int)len)) {
		OPENSSL_free(copy);
		return 0;
	}
	return 1;
}

static X509 *make_ca_cert(EVP_PKEY *key)
{
	X509 *cert = X509_new();
	char cn[128], host[64] = "localhost";
	if (!cert)
		return NULL;
	(void)gethostname(host, sizeof(host) - 1);
	snprintf(cn, sizeof(cn), "keyward CA (%s)", host);
	X509_NAME *name = X509_get_subject_name(cert);
	if (!X509_set_version(cert, 2) || random_serial(cert) < 0 ||
	    !X509_gmtime_adj(X509_getm_notBefore(cert), -3600) ||
	    !X509_gmtime_adj(X509_getm_notAfter(cert), (long)3650 * 24 * 3600) ||
	    !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"keyward", -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) ||
	    !X509_set_issuer_name(cert, name) || !set_ca_pubkey(cert, key) ||
	    add_ext(cert, cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
	    add_ext(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
	    add_ext(cert, cert, NID_subject_key_identifier, "hash") < 0 || !X509_sign(cert, key, EVP_sha256())) {
		X509_free(cert);
		return NULL;
	}
	return cert;
}

static int ca_init(struct tls_ca *ca)
{
	ca->leaf_key = EVP_EC_gen("P-256");
	if (!ca->leaf_key)
		return -ENOMEM;
	pthread_mutex_init(&ca->lock, NULL);
	return 0;
}

int tls_ca_new_ephemeral(struct tls_ca **ret)
{
	struct tls_ca *ca = calloc(1, sizeof(*ca));
	if (!ca)
		return -ENOMEM;
	ca->key = EVP_EC_gen("P-256");
	if (ca->key)
		ca->cert = make_ca_cert(ca->key);
	if (!ca->cert) {
		EVP_PKEY_free(ca->key);
		free(ca);
		return -ENOMEM;
	}
	pthread_mutex_init(&ca->lock, NULL);
	*ret = ca;
	return 0;
}

int tls_ca_new_leaf_key(struct tls_ca *ca)
{
	if (ca->leaf_key)
		return 0;
	ca->leaf_key = EVP_EC_gen("P-256");
	return ca->leaf_key ? 0 : -ENOMEM;
}

static int write_new_file(const char *path, mode_t mode, int (*writer)(FILE *, void *), void *arg)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	FILE *f = fdopen(fd, "w");
	if (!f) {
		int r = -errno;
		close(fd);
		unlink(path);
		return r;
	}
	int r = writer(f, arg);
	if (fflush(f) != 0 || fsync(fileno(f)) < 0)
		r = r < 0 ? r : -errno;
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	if (r < 0)
		unlink(path);
	return r;
}

static int write_key(FILE *f, void *key)
{
	return PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) ? 0 : -EIO;
}

static int write_cert(FILE *f, void *cert)
{
	return PEM_write_X509(f, cert) ? 0 : -EIO;
}

/* Opens a file we are about to trust: no symlinks, and for a private key,
 * nobody but the owner may read it. */
static FILE *open_private(const char *path, bool is_key, char *errbuf, size_t errlen, int *err)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		*err = -errno;
		snprintf(errbuf, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		*err = -EINVAL;
		snprintf(errbuf, errlen, "%s: not a regular file", path);
		close(fd);
		return NULL;
	}
	if (is_key && (st.st_mode & 077)) {
		*err = -EPERM;
		snprintf(errbuf, errlen,
		         "%s: CA key is readable by group or others (mode %03o); fix with: chmod 600 %s", path,
		         st.st_mode & 0777, path);
		close(fd);
		return NULL;
	}
	FILE *f = fdopen(fd, "r");
	if (!f) {
		*err = -errno;
		close(fd);
	}
	return f;
}

int tls_ca_load_or_create(const char *dir, struct tls_ca **ret, char *errbuf, size_t errlen)
{
	char cert_path[4096], key_path[4096];
	int r = 0;

	snprintf(cert_path, sizeof(cert_path), "%s/ca.pem", dir);
	snprintf(key_path, sizeof(key_path), "%s/ca-key.pem", dir);

	struct tls_ca *ca = calloc(1, sizeof(*ca));
	if (!ca)
		return -ENOMEM;

	if (access(key_path, F_OK) < 0 && errno == ENOENT) {
		ca->key = EVP_EC_gen("P-256");
		if (ca->key)
			ca->cert = make_ca_cert(ca->key);
		if (!ca->cert) {
			snprintf(errbuf, errlen, "cannot create a CA certificate");
			r = -ENOMEM;
			goto fail;
		}
		r = write_new_file(key_path, 0600, write_key, ca->key);
		if (r == 0) {
			unlink(cert_path);
			r = write_new_file(cert_path, 0644, write_cert, ca->cert);
		}
		if (r < 0) {
			snprintf(errbuf, errlen, "%s: cannot write the CA: %s", dir, strerror(-r));
			unlink(key_path);
			goto fail;
		}
		log_info("created a new CA in %s (export it with: keyward ca export)", dir);
	} else {
		FILE *f = open_private(key_path, true, errbuf, errlen, &r);
		if (!f)
			goto fail;
		ca->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
		if (!ca->key) {
			snprintf(errbuf, errlen, "%s: not a PEM private key", key_path);
			r = -EINVAL;
			goto fail;
		}
		f = open_private(cert_path, false, errbuf, errlen, &r);
		if (!f)
			goto fail;
		ca->cert = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
		if (!ca->cert) {
			snprintf(errbuf, errlen, "%s: not a PEM certificate", cert_path);
			r = -EINVAL;
			goto fail;
		}
		if (X509_check_private_key(ca->cert, ca->key) != 1) {
			snprintf(errbuf, errlen, "%s does not belong to %s", key_path, cert_path);
			r = -EINVAL;
			goto fail;
		}
	}
	r = ca_init(ca);
	if (r < 0) {
		snprintf(errbuf, errlen, "cannot create a leaf key");
		goto fail;
	}
	ERR_clear_error();
	*ret = ca;
	return 0;
fail:
	ERR_clear_error();
	EVP_PKEY_free(ca->key);
	X509_free(ca->cert);
	free(ca);
	return r;
}

void tls_ca_free(struct tls_ca *ca)
{
	if (!ca)
		return;
	for (size_t i = 0; i < LEAF_CACHE_SLOTS; i++) {
		free(ca->cache[i].host);
		X509_free(ca->cache[i].cert);
	}
	EVP_PKEY_free(ca->leaf_key);
	EVP_PKEY_free(ca->key);
	X509_free(ca->cert);
	pthread_mutex_destroy(&ca->lock);
	free(ca);
}

char *tls_ca_cert_pem(const struct tls_ca *ca)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *out = NULL, *data;
	if (!b)
		return NULL;
	if (PEM_write_bio_X509(b, ca->cert)) {
		long n = BIO_get_mem_data(b, &data);
		out = strndup(data, (size_t)n);
	}
	BIO_free(b);
	return out;
}

static X509 *mint_leaf(struct tls_ca *ca, const char *host)
{
	char san[300];
	X509 *cert = X509_new();
	if (!cert)
		return NULL;
	snprintf(san, sizeof(san), "%s:%s", is_ip_literal(host) ? "IP" : "DNS", host);
	X509_NAME *name = X509_get_subject_name(cert);
	/* CN is limited to 64 bytes; clients use the SAN anyway. */
	char cn[65];
	snprintf(cn, sizeof(cn), "%s", host);
	if (!X509_set_version(cert, 2) || random_serial(cert) < 0 ||
	    !X509_gmtime_adj(X509_getm_notBefore(cert), -3600) ||
	    !X509_gmtime_adj(X509_getm_notAfter(cert), (long)LEAF_DAYS * 24 * 3600) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) ||
	    !X509_set_issuer_name(cert, X509_get_subject_name(ca->cert)) || !X509_set_pubkey(cert, ca->leaf_key) ||
	    add_ext(cert, ca->cert, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    add_ext(cert, ca->cert, NID_key_usage, "critical,digitalSignature") < 0 ||
	    add_ext(cert, ca->cert, NID_ext_key_usage, "serverAuth") < 0 ||
	    add_ext(cert, ca->cert, NID_authority_key_identifier, "keyid:always") < 0 ||
	    add_ext(cert, ca->cert, NID_subject_alt_name, san) < 0 || !X509_sign(cert, ca->key, EVP_sha256())) {
		X509_free(cert);
		return NULL;
	}
	return cert;
}

static size_t host_slot(const char *host)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (const char *p = host; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	return (size_t)(h % LEAF_CACHE_SLOTS);
}

/* Returns a new reference to the leaf for host, minting it if the cache
 * has none (or an expiring one) in the host's slot. */
static X509 *leaf_for_host(struct tls_ca *ca, const char *host)
{
	size_t s = host_slot(host);
	time_t now = time(NULL);
	X509 *cert = NULL;

	pthread_mutex_lock(&ca->lock);
	struct leaf *l = &ca->cache[s];
	if (l->host && streq(l->host, host) && l->not_after > now + 24 * 3600) {
		cert = l->cert;
		X509_up_ref(cert);
	}
	pthread_mutex_unlock(&ca->lock);
	if (cert)
		return cert;

	cert = mint_leaf(ca, host);
	if (!cert)
		return NULL;
	char *copy = strdup(host);
	if (!copy)
		return cert;
	pthread_mutex_lock(&ca->lock);
	free(l->host);
	X509_free(l->cert);
	l->host = copy;
	l->cert = cert;
	l->not_after = now + (time_t)LEAF_DAYS * 24 * 3600;
	X509_up_ref(cert);
	pthread_mutex_unlock(&ca->lock);
	return cert;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
	/* We speak only HTTP/1.1 inside a tunnel. */
	for (unsigned i = 0; i < inlen;) {
		unsigned len = in[i];
		if (i + 1 + len > inlen)
			break;
		if (len == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
			*out = in + i + 1;
			*outlen = 8;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + len;
	}
	return SSL_TLSEXT_ERR_NOACK;
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
	const char *want = SSL_get_ex_data(ssl, ex_host_index);
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (!sni || !want)
		return SSL_TLSEXT_ERR_OK;
	size_t n = strlen(sni);
	if (n && sni[n - 1] == '.')
		n--;
	if (strlen(want) == n && strncasecmp(sni, want, n) == 0)
		return SSL_TLSEXT_ERR_OK;
	/* The host that is checked is the host that is dialled: a ClientHello
	 * for another name than the CONNECT target is refused. */
	SSL_set_ex_data(ssl, ex_mismatch_index, (void *)1);
	*alert = SSL_AD_UNRECOGNIZED_NAME;
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

SSL_CTX *tls_server_ctx_new(void)
{
	pthread_once(&ex_once, ex_init);
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"keyward", 7);
	/* Resumption by tickets only, one per handshake. A client resumes
	 * with one ticket and gets a new one each time; OpenSSL's default of
	 * two costs a second ticket's encryption and record per new tunnel.
	 * Tickets serve TLS 1.2 and 1.3 alike, so the session cache in
	 * memory (up to 20,480 sessions, for TLS 1.2 clients that resume by
	 * session id only) would only take memory and a lock per handshake. */
	(void)SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
	return ctx;
}

SSL *tls_server_ssl_new(SSL_CTX *ctx, struct tls_ca *ca, const char *host)
{
	X509 *leaf = leaf_for_host(ca, host);
	if (!leaf)
		return NULL;
	SSL *ssl = SSL_new(ctx);
	char *want = strdup(host);
	/* Certificate and key in one call: SSL_use_certificate and then
	 * SSL_use_PrivateKey run the security-level checks and compare the
	 * key with the certificate's twice, 3.4 against 2.4 us a tunnel (a
	 * loop of SSL_new, these, SSL_free). The key is still checked
	 * against the certificate. */
	if (!ssl || !want || SSL_use_cert_and_key(ssl, leaf, ca->leaf_key, NULL, 1) != 1) {
		X509_free(leaf);
		SSL_free(ssl);
		free(want);
		return NULL;
	}
	X509_free(leaf);
	/* Without read-ahead OpenSSL reads each record with two read(2), its
	 * 5-byte header and then its body: six for a resumed handshake
	 * (ClientHello; the client's ChangeCipherSpec and Finished, which come
	 * together). With it, one read(2) takes what has arrived, as nginx
	 * does. After the handshake keyward's own reading keeps it
	 * (tlsread.h), and reads at once what the handshake read beyond the
	 * client's Finished (often its first request); libevent 2.1's
	 * reading could not: it stops when SSL_pending() is 0, which does not
	 * count records read ahead and not yet decrypted. */
	SSL_set_read_ahead(ssl, 1);
	/* Names only: an IP literal tunnel has no SNI to compare. */
	if (!is_ip_literal(host))
		SSL_set_ex_data(ssl, ex_host_index, want);
	else
		free(want), want = NULL;
	return ssl;
}

bool tls_server_sni_mismatch(SSL *ssl)
{
	return SSL_get_ex_data(ssl, ex_mismatch_index) != NULL;
}

/* libevent 2.1's TLS bufferevent over a socket adds its write event when
 * it is made (set_handshake_callbacks) and again when the handshake ends
 * (bufferevent_enable in do_handshake), with nothing to write either
 * time. epoll reports the new socket writable at once, the loop wakes for
 * it, and libevent takes EPOLLOUT off again: per new tunnel two
 * epoll_ctl(2) and up to two passes of the loop that did nothing (one
 * before the ClientHello has arrived, one before the first request has).
 * Nothing is lost by taking the event off: the handshake is driven by
 * reading (do_handshake adds the write event itself when OpenSSL wants
 * to write), and once open the output buffer's callback adds it when
 * bytes are queued on an empty buffer, which is the same rule libevent's
 * own write callback keeps when it finds the buffer empty. Only the
 * event is removed; the bufferevent stays enabled for writing. */
void tls_bev_idle_write_off(struct bufferevent *bev)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		(void)event_del(&bev->ev_write);
}

/* Whether dir holds OpenSSL's hashed names (HHHHHHHH.N) of certificates. */
static bool has_hashed_certs(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return false;
	bool found = false;
	struct dirent *e;
	while (!found && (e = readdir(d))) {
		const char *n = e->d_name;
		size_t i = 0;
		while (i < 8 && isxdigit((unsigned char)n[i]))
			i++;
		found = i == 8 && n[8] == '.' && isdigit((unsigned char)n[9]);
	}
	closedir(d);
	return found;
}

/* The system's trusted roots. Reading the whole bundle file costs tens of
 * milliseconds per context (every certificate is parsed), which would
 * dominate the start of `keyward run`; the hashed directory is read
 * lazily, one issuer at a time when a chain needs it. The bundle is used
 * when SSL_CERT_FILE names one or the directory has no hashed names. */
static int load_system_roots(SSL_CTX *ctx)
{
	const char *file = secure_getenv(X509_get_default_cert_file_env());
	const char *dir = secure_getenv(X509_get_default_cert_dir_env());
	if (!dir || !*dir)
		dir = X509_get_default_cert_dir();
	if ((file && *file) || !has_hashed_certs(dir))
		return SSL_CTX_set_default_verify_paths(ctx);
	return SSL_CTX_load_verify_dir(ctx, dir);
}

/* Adds every certificate of the PEM text to st; the number added, or -1. */
static int store_add_pem(X509_STORE *st, const char *pem, size_t len)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	STACK_OF(X509_INFO) *infos = bio ? PEM_X509_INFO_read_bio(bio, NULL, NULL, NULL) : NULL;
	int n = infos ? 0 : -1;
	for (int i = 0; infos && i < sk_X509_INFO_num(infos); i++) {
		X509_INFO *xi = sk_X509_INFO_value(infos, i);
		if (xi->x509 && X509_STORE_add_cert(st, xi->x509) == 1)
			n++;
		else if (xi->x509)
			n = -1;
		if (n < 0)
			break;
	}
	sk_X509_INFO_pop_free(infos, X509_INFO_free);
	BIO_free(bio);
	return n;
}

int tls_ca_file_read(const char *path, char **ret_pem, size_t *ret_len, char *errbuf, size_t errlen)
{
	enum { CA_FILE_MAX = 4 << 20 };
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(errbuf, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > CA_FILE_MAX) {
		snprintf(errbuf, errlen, "%s: not a regular file of at most %d MiB", path, CA_FILE_MAX >> 20);
		return -EINVAL;
	}
	char *pem = malloc((size_t)st.st_size + 1);
	size_t n = 0;
	if (!pem) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	while (n < (size_t)st.st_size) {
		ssize_t k = read(fd, pem + n, (size_t)st.st_size - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		n += (size_t)k;
	}
	pem[n] = '\0';
	X509_STORE *store = X509_STORE_new();
	int certs = store ? store_add_pem(store, pem, n) : -1;
	X509_STORE_free(store);
	ERR_clear_error();
	if (certs <= 0) {
		snprintf(errbuf, errlen, "%s: cannot load CA certificates from this file", path);
		free(pem);
		return -EINVAL;
	}
	*ret_pem = pem;
	*ret_len = n;
	return 0;
}

SSL_CTX *tls_client_ctx_new(const char *extra_pem, size_t extra_len, char *errbuf, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		snprintf(errbuf, errlen, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* A body delimited by the end of the connection ends with a TCP close
	 * that many servers send without close_notify; llhttp then decides
	 * whether the message was complete. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
	if (load_system_roots(ctx) != 1) {
		snprintf(errbuf, errlen, "cannot load the system's trusted CA certificates");
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (extra_pem && store_add_pem(SSL_CTX_get_cert_store(ctx), extra_pem, extra_len) <= 0) {
		snprintf(errbuf, errlen, "cannot load the certificates of an upstream_ca file");
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return NULL;
	}
	static const unsigned char alpn[] = "\x08http/1.1";
	SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
	return ctx;
}

SSL *tls_client_ssl_new(SSL_CTX *ctx, const char *host)
{
	SSL *ssl = SSL_new(ctx);
	if (!ssl)
		return NULL;
	if (is_ip_literal(host)) {
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)
			goto fail;
	} else {
		if (SSL_set_tlsext_host_name(ssl, host) != 1 || SSL_set1_host(ssl, host) != 1)
			goto fail;
		/* No wildcard matching of a partial label like f*.example.com. */
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	}
	return ssl;
fail:
	SSL_free(ssl);
	return NULL;
}
