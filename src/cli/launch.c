/* The keyward executable: a small front that loads libkeyward.so, where
 * every command lives, and calls its entry point.
 *
 * Why a front: a program linked with OpenSSL and libevent runs no code of
 * its own until the dynamic loader has mapped and relocated them, about
 * 3 ms, and `keyward run` has two things to start sooner. This front needs
 * only the C library. For `run` it first clones the sandbox's PID 1
 * (sandbox_clone), which builds what every sandbox has while keyward loads
 * its library and reads its policy. Then a second thread loads the library
 * and runs the command, while the main thread takes the kernel's cgroup
 * attach lock, whose first taking after a quiet spell waits about 10 ms
 * (sandbox/warm.c). The second thread loads OpenSSL's libcrypto first and
 * has a third start OpenSSL (warm_openssl) while the rest loads. Every
 * other command is called on the main thread, as in any program.
 *
 * The library is looked for next to the executable (a build tree), then in
 * the folder it is installed to (KEYWARD_LIBDIR); both are as trusted as
 * the executable itself, and no environment variable changes the choice. */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/util.h"
#include "sandbox/sandbox.h"
#include "sandbox/warm.h"

#define LIBRARY "libkeyward.so"

/* The entry point, or exit with status `fail`. */
static cli_entry_fn *load(int fail)
{
	char path[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
	char *slash = n > 0 ? memrchr(path, '/', (size_t)n) : NULL;
	if (slash && (size_t)(slash - path) + sizeof("/" LIBRARY) <= sizeof(path)) {
		memcpy(slash, "/" LIBRARY, sizeof("/" LIBRARY));
		if (access(path, F_OK) < 0)
			slash = NULL;
	} else {
		slash = NULL;
	}
	if (!slash)
		snprintf(path, sizeof(path), "%s/%s", KEYWARD_LIBDIR, LIBRARY);
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	cli_entry_fn *entry = lib ? (cli_entry_fn *)dlsym(lib, CLI_ENTRY) : NULL;
	if (!entry) {
		fprintf(stderr, "keyward: cannot load its library: %s\n", dlerror());
		_exit(fail); /* stderr is unbuffered; and no exit handler may run under warm_openssl */
	}
	return entry;
}

/* The first use of OpenSSL in a process takes ~3 ms: it reads its
 * configuration and builds the tables of its providers' methods, for key
 * management, signatures and digests alike. `run` needs them at once (its
 * CA, the policy's placeholders, the audit chain), so a thread makes that
 * first use while the dynamic loader maps and relocates the rest of the
 * library (~2 ms): a P-256 key made and dropped, SHA-256 and ECDSA
 * fetched, after the random generator is chosen (CLI_DRBG). Nothing is
 * kept but OpenSSL's own tables. Best effort: when a
 * symbol is missing, nothing is done, and keyward makes the same first
 * use later. OpenSSL's initialisation is thread-safe; it takes no lock of
 * the dynamic loader (libcrypto is linked NODELETE). dlsym does take it,
 * and the loading of the rest of the library holds it throughout, so the
 * functions are looked up before the thread starts (struct warm). */
struct warm {
	int (*drbg_type)(void *, const char *, const char *, const char *, const char *);
	void *(*keygen)(void *, const char *, const char *, ...);
	void (*pkey_free)(void *);
	void *(*md_fetch)(void *, const char *, const char *);
	void (*md_free)(void *);
	void *(*sig_fetch)(void *, const char *, const char *);
	void (*sig_free)(void *);
};

/* Whether every function was found. */
static bool warm_lookup(void *crypto, struct warm *w)
{
	w->drbg_type = dlsym(crypto, "RAND_set_DRBG_type");
	w->keygen = dlsym(crypto, "EVP_PKEY_Q_keygen");
	w->pkey_free = dlsym(crypto, "EVP_PKEY_free");
	w->md_fetch = dlsym(crypto, "EVP_MD_fetch");
	w->md_free = dlsym(crypto, "EVP_MD_free");
	w->sig_fetch = dlsym(crypto, "EVP_SIGNATURE_fetch");
	w->sig_free = dlsym(crypto, "EVP_SIGNATURE_free");
	return w->drbg_type && w->keygen && w->pkey_free && w->md_fetch && w->md_free && w->sig_fetch && w->sig_free;
}

static void *warm_openssl(void *arg)
{
	const struct warm *w = arg;
	w->pkey_free(w->keygen(NULL, NULL, "EC", "P-256"));
	w->md_free(w->md_fetch(NULL, "SHA256", NULL));
	w->sig_free(w->sig_fetch(NULL, "ECDSA", NULL));
	return NULL;
}

struct body {
	int argc;
	char **argv;
	struct cli_launch launch;
	sigset_t mask;
};

/* `run` on its own thread: the process ends when it returns. */
static void *body_main(void *arg)
{
	struct body *b = arg;
	void *crypto = dlopen(KEYWARD_LIBCRYPTO, RTLD_NOW | RTLD_LOCAL);
	/* signals blocked: the thread inherits that; `run` joins it before it exits */
	static struct warm warm;
	/* The generator is chosen here, while no other thread uses OpenSSL;
	 * keyward_main chooses it when there is no warm thread. */
	b->launch.warming = crypto && warm_lookup(crypto, &warm) &&
	                    warm.drbg_type(NULL, CLI_DRBG, NULL, NULL, CLI_DRBG_DIGEST) == 1 &&
	                    pthread_create(&b->launch.warm, NULL, warm_openssl, &warm) == 0;
	cli_entry_fn *entry = load(EXIT_SETUP);
	pthread_sigmask(SIG_SETMASK, &b->mask, NULL);
	exit(entry(b->argc, b->argv, &b->launch));
}

int main(int argc, char **argv)
{
	if (argc > 1 && streq(argv[1], "run")) {
		static struct sandbox sandbox;
		static struct body b;
		/* A failure is kept in the struct and told by `run` where it
		 * would have cloned, after its own checks. */
		(void)sandbox_clone(&sandbox, argc, argv);
		b = (struct body){ .argc = argc, .argv = argv, .launch.sandbox = &sandbox };
		/* Signals go to the command's thread, which handles them (the
		 * proxy passes them to the sandbox); this one only waits. */
		sigset_t all;
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &b.mask);
		pthread_t body;
		if (pthread_create(&body, NULL, body_main, &b) == 0) {
			if (sandbox.pid > 0)
				sandbox_warm_take();
			pthread_join(body, NULL); /* never returns: body_main exits */
			return 1;
		}
		pthread_sigmask(SIG_SETMASK, &b.mask, NULL);
		cli_entry_fn *entry = load(EXIT_SETUP);
		return entry(argc, argv, &b.launch);
	}
	cli_entry_fn *entry = load(1);
	return entry(argc, argv, NULL);
}
