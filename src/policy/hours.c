/* Time windows of routes and credentials (hours:, timezone:). Pure
 * functions of the policy and a UNIX time: no clock, no time zone
 * database, no locale. */
#include "policy/policy.h"

#define DAY_S 86400

bool policy_hours_open(const struct policy_quota *q, int64_t now, uint64_t *ret_wait_s)
{
	if (!q->has_hours)
		return true;
	int64_t local = now + (int64_t)q->tz_offset_min * 60;
	int64_t days = local / DAY_S - (local % DAY_S < 0);
	int64_t sod = local - days * DAY_S;            /* second of the day, 0..86399 */
	int weekday = (int)(((days + 3) % 7 + 7) % 7); /* 1970-01-01 was a Thursday; Monday is 0 */
	uint64_t best = 0;

	for (size_t i = 0; i < q->n_windows; i++) {
		const struct policy_window *w = &q->windows[i];
		if ((w->days & (1u << weekday)) && sod >= w->start * 60 && sod < w->end * 60)
			return true;
	}
	/* closed: the next start, looking a week ahead */
	for (int d = 0; d <= 7; d++) {
		int wd = (weekday + d) % 7;
		for (size_t i = 0; i < q->n_windows; i++) {
			const struct policy_window *w = &q->windows[i];
			if (!(w->days & (1u << wd)))
				continue;
			int64_t wait = (int64_t)d * DAY_S + w->start * 60 - sod;
			if (wait > 0 && (best == 0 || (uint64_t)wait < best))
				best = (uint64_t)wait;
		}
	}
	*ret_wait_s = best;
	return false;
}
