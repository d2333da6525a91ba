/* Diagnostics to stderr. Never pass a secret value to any of these: log the
 * credential's name instead. fatal() is for start-up and impossible states. */
#pragma once

#include <stdarg.h>
#include <stddef.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Messages above this level are dropped. Default LOG_INFO. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Replaces, in place, every byte of s[0..n) that a terminal acts on (C0
 * controls but those in keep, DEL, and the UTF-8 encodings of the C1
 * controls U+0080..U+009F) with '?'. For text that came from a file or the
 * network (a path of the policy, an exec: command) on its way to a
 * terminal: an escape sequence there could rewrite or hide what was
 * printed before or after it. keep: the controls to leave ("\n"), or "". */
void log_clean(char *s, size_t n, const char *keep);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
_Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                   \
	do {                                             \
		if (log_get_level() >= LOG_DEBUG)        \
			log_msg(LOG_DEBUG, __VA_ARGS__); \
	} while (0)
