/* The commands of keyward: keyward_main() is libkeyward.so's entry point,
 * which the keyward executable (launch.c) loads and calls. */
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/log.h"
#include "sandbox/sandbox.h"

static const char usage[] = "Usage: keyward COMMAND [ARGS]\n"
                            "\n"
                            "Lets untrusted code use real API credentials without holding them: a\n"
                            "deny-by-default proxy checks every request against a policy and attaches\n"
                            "the real credential only where the policy allows.\n"
                            "\n"
                            "Commands:\n"
                            "  run [--policy FILE] [--workspace DIR] [--audit FILE] [--] CMD [ARG]...\n"
                            "                        run CMD in a sandbox whose only way out is the proxy\n"
                            "  proxy --policy FILE --listen ADDR [--audit FILE]\n"
                            "                        run the credential-injecting HTTP(S) proxy\n"
                            "  policy check FILE     validate a policy and print what it allows\n"
                            "  policy trust FILE     take a policy a sandbox may have written as yours\n"
                            "  audit verify FILE     check the hash chain of an audit log\n"
                            "  audit show FILE       print an audit log for people\n"
                            "  secret set NAME       store a secret in the vault (value on standard input)\n"
                            "  secret list           list the vault's secrets (names and times, never values)\n"
                            "  secret rm NAME        remove a secret from the vault\n"
                            "  ca export             print the CA certificate clients must trust\n"
                            "\n"
                            "Options:\n"
                            "  -h, --help            show help (also: keyward COMMAND --help)\n"
                            "  -V, --version         show the version\n"
                            "\n"
                            "State (the vault and its key, the CA of `keyward proxy`, the default audit log) lives in\n"
                            "$KEYWARD_HOME, else "
                            "$XDG_DATA_HOME/keyward, else ~/.local/share/keyward.\n"
                            "Exit status: 0 success, 1 failure, 2 usage or policy error.\n"
                            "Documentation: README.md and docs/ in the source tree.\n";

int cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return 0;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return 1;
	}
	return 0;
}

/* `keyward run` has synced its audit log, removed its cgroups and reaped
 * the sandbox when it returns: the process then ends at once instead of
 * running the libraries' exit handlers (OpenSSL's alone frees thousands of
 * objects), which only delays the caller that waits for CMD's status. Not
 * under AddressSanitizer, whose leak check runs at exit. */
__attribute__((noreturn)) static void exit_now(int status)
{
	if (cli_sandbox) {
		/* a run that stopped before CMD (e.g. --help): PID 1 and the
		 * cgroup it was cloned into; nothing when `run` cleaned up */
		sandbox_kill(cli_sandbox);
		sandbox_cleanup(cli_sandbox);
	}
	fflush(NULL);
#ifndef __SANITIZE_ADDRESS__
	_exit(status);
#endif
	exit(status);
}

char **cli_argv;
int cli_argc;
struct sandbox *cli_sandbox;

int keyward_main(int argc, char **argv, struct cli_launch *launch)
{
	cli_argv = argv;
	cli_argc = argc;
	cli_sandbox = launch ? launch->sandbox : NULL;
	if (argc < 2) {
		fputs(usage, stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
		fputs(usage, stdout);
		return 0;
	}
	if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0) {
		printf("keyward %s\n", KEYWARD_VERSION);
		return 0;
	}
	/* Before any use of OpenSSL (which help and the version make none
	 * of); cli.h says why. A failure of either keeps OpenSSL's default,
	 * which works as well, only later. */
	if (OPENSSL_init_crypto(CLI_OPENSSL_INIT, NULL) != 1)
		ERR_clear_error();
	if (RAND_set_DRBG_type(NULL, CLI_DRBG, NULL, NULL, CLI_DRBG_DIGEST) != 1)
		ERR_clear_error();
	if (strcmp(cmd, "run") == 0)
		exit_now(cmd_run(argc - 1, argv + 1));
	if (strcmp(cmd, "proxy") == 0)
		return cmd_proxy(argc - 1, argv + 1);
	if (strcmp(cmd, "policy") == 0)
		return cmd_policy(argc - 1, argv + 1);
	if (strcmp(cmd, "audit") == 0)
		return cmd_audit(argc - 1, argv + 1);
	if (strcmp(cmd, "secret") == 0)
		return cmd_secret(argc - 1, argv + 1);
	if (strcmp(cmd, "ca") == 0)
		return cmd_ca(argc - 1, argv + 1);
	fprintf(stderr, "keyward: unknown command \"%s\" (see keyward --help)\n", cmd);
	return 2;
}
