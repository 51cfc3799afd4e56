/* control/sizing_plot.h — renders a computed sizing plan: the table, JSON, and SVG/PNG plots. */
#ifndef CAMRELAY_CONTROL_SIZING_PLOT_H
#define CAMRELAY_CONTROL_SIZING_PLOT_H

#include <stdio.h>

#include "control/sizing.h"

/*
 * Everything here reads a plan that ctl_size_compute() has filled in and never changes it.
 * Any thread may call these on its own plan; ctl_size_plot runs gnuplot for .png, so it
 * belongs to a command-line program rather than a daemon.
 */

/* Human report: totals, appliances (with a bench), sites short of uplink, then per-site rows
 * (the first 20 unless all). Borrows plan and out. */
void ctl_size_print(const struct ctl_size_plan *plan, int all, FILE *out);

/* The same figures as one JSON document (every site included). Returns 0 or -EIO when the
 * document could not be written. */
int ctl_size_print_json(const struct ctl_size_plan *plan, FILE *out);

/* The plot's x axis is "the first k sites" (in plan order), k = 1..N, sampled at no more than
 * CTL_SIZE_PLOT_POINTS points; each point's figures are computed exactly like the totals. */
#define CTL_SIZE_PLOT_POINTS 1000

/* Writes plan as an SVG document: central downstream (payload, and with overhead and
 * headroom) in Mbit/s, and relay load (streams; appliances when the plan has a bench)
 * against the number of sites. Returns 0 or -EIO. */
int ctl_size_plot_svg(const struct ctl_size_plan *plan, FILE *out);

/* Writes the same plot as a PNG by running gnuplot (gnuplot-nox) into out_fd. Returns 0,
 * -ENOENT when gnuplot is not installed, -EIO when it failed (its messages went to stderr). */
int ctl_size_plot_png(const struct ctl_size_plan *plan, int out_fd);

/* Writes the plot to path: SVG for *.svg, PNG for *.png (case-insensitive); a partial file is
 * removed on failure. Returns 0, or -errno after a message on err. */
int ctl_size_plot(const struct ctl_size_plan *plan, const char *path, FILE *err);

#endif
