/* keyward secret set NAME | list | rm NAME: the vault from the command
 * line. A value only ever comes in on standard input (argv is readable by
 * every user through /proc) and no command prints one. */
#include <errno.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <time.h>

#include "cli/cli.h"
#include "common/log.h"
#include "common/secret.h"
#include "secrets/private_file.h"
#include "secrets/vault.h"

static const char usage_set[] = "Usage: keyward secret set NAME\n"
                                "\n"
                                "Stores a secret in the vault under NAME (1 to 128 of A-Z a-z 0-9 _ . -).\n"
                                "The value is read from standard input, never from the command line; one\n"
                                "trailing newline is dropped. At a terminal it is asked for twice, without\n"
                                "echo (a terminal line holds at most 4095 bytes: give a longer value, such\n"
                                "as a PEM key, on standard input). It must not be empty, longer than 64 KiB,\n"
                                "or contain control bytes.\n"
                                "Setting an existing NAME rotates it: a policy's from: vault:NAME gets the\n"
                                "new value the next time keyward loads it.\n"
                                "  printf %s \"$TOKEN\" | keyward secret set github\n";

static const char usage_list[] = "Usage: keyward secret list\n"
                                 "\n"
                                 "Lists the secrets in the vault: name, creation and last rotation time (UTC).\n"
                                 "Values are never shown; no command prints one.\n";

static const char usage_rm[] = "Usage: keyward secret rm NAME\n"
                               "\n"
                               "Removes the secret NAME from the vault (exit 1 if there is none).\n";

static const char usage[] = "Usage: keyward secret set NAME     (value on standard input)\n"
                            "       keyward secret list\n"
                            "       keyward secret rm NAME\n"
                            "\n"
                            "Keeps secrets in keyward's encrypted vault, the file `vault` in the state\n"
                            "directory; a policy uses one with from: vault:NAME. No command prints a value.\n"
                            "The vault is sealed (AES-256-GCM) under the key file vault.key, made on first\n"
                            "use, or, when KEYWARD_PASSPHRASE_FILE names a file (mode 0600), under a key\n"
                            "derived from the passphrase in it (scrypt). See docs/vault.md.\n"
                            "Exit status: 0 success, 1 failure, 2 usage.\n";

/* The terminal's settings while echo is off, for a signal that ends us
 * mid-prompt: the user's shell must not be left without echo. */
static struct termios saved_tty;

static void restore_tty_and_die(int sig)
{
	(void)tcsetattr(0, TCSAFLUSH, &saved_tty); /* async-signal-safe */
	signal(sig, SIG_DFL);
	raise(sig);
}

static const int fatal_signals[] = { SIGINT, SIGQUIT, SIGTERM, SIGHUP };

static void on_fatal_signals(void (*handler)(int))
{
	struct sigaction sa = { .sa_handler = handler };
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < ARRAY_SIZE(fatal_signals); i++)
		(void)sigaction(fatal_signals[i], &sa, NULL);
}

/* Reads one line from the terminal on fd 0 with echo off into *ret. */
static int prompt_line(const char *prompt, struct secret **ret)
{
	struct termios old, quiet;
	if (tcgetattr(0, &old) < 0)
		return -errno;
	saved_tty = old;
	on_fatal_signals(restore_tty_and_die);
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	quiet.c_lflag |= ECHONL;
	/* Echo goes off before the prompt shows, so nothing typed after
	 * seeing it is echoed, nor flushed away. */
	if (tcsetattr(0, TCSAFLUSH, &quiet) < 0) {
		int r = -errno;
		on_fatal_signals(SIG_DFL);
		return r;
	}
	fputs(prompt, stderr);
	fflush(stderr);
	_cleanup_secret_ struct secret *buf = NULL;
	int r = secret_alloc(SECRET_MAX + 1, &buf);
	size_t n = 0;
	while (r == 0 && n < buf->len) {
		ssize_t k = read(0, buf->data + n, 1);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			r = -errno;
		if (k <= 0 || buf->data[n] == '\n')
			break;
		n++;
	}
	(void)tcsetattr(0, TCSAFLUSH, &old);
	on_fatal_signals(SIG_DFL);
	if (r == 0)
		r = secret_new(buf->data, n, ret);
	return r;
}

/* The longest line a Linux terminal passes in canonical mode: the line
 * discipline keeps 4095 bytes and drops the rest of a longer line without a
 * word, so a value that long may have been cut. */
#define TTY_LINE_MAX 4095

/* The value at a terminal, asked twice and compared (in constant time,
 * like every comparison of secrets). */
static int read_value_tty(const char *name, struct secret **ret)
{
	char prompt[VAULT_NAME_MAX + 32];
	_cleanup_secret_ struct secret *a = NULL, *b = NULL;
	snprintf(prompt, sizeof(prompt), "Value for %s: ", name);
	int r = prompt_line(prompt, &a);
	if (r == 0)
		r = prompt_line("Again: ", &b);
	if (r < 0) {
		log_error("cannot read the value from the terminal: %s", strerror(-r));
		return r;
	}
	if (a->len >= TTY_LINE_MAX || b->len >= TTY_LINE_MAX) {
		log_error("a terminal passes at most %d bytes of a line, and this value may be longer (cut); "
		          "nothing was stored. Give it on standard input instead: keyward secret set %s < FILE",
		          TTY_LINE_MAX, name);
		return -EINVAL;
	}
	if (!secret_eq(a, b)) {
		log_error("the two values differ; nothing was stored");
		return -EINVAL;
	}
	*ret = TAKE_PTR(a);
	return 0;
}

/* The value from a pipe or file on standard input: everything up to end of
 * file, less exactly one trailing newline. */
static int read_value_stdin(struct secret **ret)
{
	_cleanup_secret_ struct secret *buf = NULL;
	size_t n = 0;
	/* Room for the longest value, its newline, and one byte to see that
	 * the input is longer. */
	int r = secret_alloc(SECRET_MAX + 2, &buf);
	if (r == 0)
		r = fd_read_all(0, buf->data, buf->len, &n);
	if (r < 0) {
		log_error("cannot read the value from standard input: %s", strerror(-r));
		return r;
	}
	if (n > 0 && buf->data[n - 1] == '\n')
		n--;
	return secret_new(buf->data, n, ret);
}

static int secret_set(const char *name)
{
	_cleanup_secret_ struct secret *value = NULL;
	char err[1024], why[128];

	if (!vault_name_valid(name)) {
		log_error("invalid secret name (1 to %d characters of A-Z a-z 0-9 _ . -)", VAULT_NAME_MAX);
		return 2;
	}
	int r = isatty(0) ? read_value_tty(name, &value) : read_value_stdin(&value);
	if (r < 0)
		return 1;
	if (secret_value_check(value->data, value->len, why, sizeof(why)) < 0) {
		log_error("the value for %s %s; nothing was stored", name, why);
		return 1;
	}
	if (vault_set(name, value, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return 1;
	}
	log_info("stored %s in the vault", name);
	return 0;
}

static void utc(uint64_t t, char *out, size_t outlen)
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (!gmtime_r(&tt, &tm) || !strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, outlen, "?");
}

static int secret_list(void)
{
	struct vault_info *info = NULL;
	size_t n = 0;
	char err[1024];

	if (vault_list(&info, &n, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return 1;
	}
	if (n == 0)
		fputs("no secrets in the vault (add one with: keyward secret set NAME)\n", stderr);
	else
		printf("%-32s %-20s  %s\n", "NAME", "CREATED (UTC)", "ROTATED (UTC)");
	for (size_t i = 0; i < n; i++) {
		char created[32], rotated[32] = "-";
		utc(info[i].created, created, sizeof(created));
		if (info[i].rotated)
			utc(info[i].rotated, rotated, sizeof(rotated));
		printf("%-32s %-20s  %s\n", info[i].name, created, rotated);
	}
	free(info);
	return 0;
}

static int secret_rm(const char *name)
{
	char err[1024];
	if (!vault_name_valid(name)) {
		log_error("invalid secret name (1 to %d characters of A-Z a-z 0-9 _ . -)", VAULT_NAME_MAX);
		return 2;
	}
	if (vault_remove(name, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return 1;
	}
	log_info("removed %s from the vault", name);
	return 0;
}

int cmd_secret(int argc, char **argv)
{
	const char *sub = argc >= 2 ? argv[1] : "";
	bool set = streq(sub, "set"), list = streq(sub, "list"), rm = streq(sub, "rm");

	if (cli_wants_help(argc, argv)) {
		fputs(set ? usage_set : list ? usage_list : rm ? usage_rm : usage, stdout);
		return 0;
	}
	if ((set || rm) && argc != 3) {
		fputs(set ? usage_set : usage_rm, stderr);
		return 2;
	}
	if (list && argc != 2) {
		fputs(usage_list, stderr);
		return 2;
	}
	/* This process holds decrypted values and the vault's key. */
	secret_harden_process();
	if (set)
		return secret_set(argv[2]);
	if (rm)
		return secret_rm(argv[2]);
	if (list)
		return secret_list();
	fputs(usage, stderr);
	return 2;
}
