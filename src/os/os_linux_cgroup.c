/*
 * Linux implementation of src/os.h, part four: memory cgroups a process makes for its own
 * children, so that a memory cap is the kernel's exact one (the OOM killer ends the child
 * at it) rather than RLIMIT_DATA's count of private mappings.
 *
 * Where a group can be made: below the process's own cgroup, in cgroup v2 when the memory
 * controller is already enabled for that group's children (v2 forbids enabling it in a
 * group that holds processes, so mproc never writes subtree_control), else in v1's memory
 * hierarchy. The probe makes and removes a group to be sure: a directory can look writable
 * (a read-only bind, a user namespace) and still refuse.
 */
#define _GNU_SOURCE
#include "os/os.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The mount point of the hierarchy (v2: fstype cgroup2; v1: cgroup with the memory
 * option) from /proc/self/mountinfo, into mnt. */
static bool find_mount(bool v2, char *mnt, size_t cap) {
  FILE *f = fopen("/proc/self/mountinfo", "re");
  if (!f)
    return false;
  char line[4096];
  bool found = false;
  while (!found && fgets(line, sizeof line, f)) {
    /* "id parent maj:min root mountpoint opts ... - fstype source superopts" */
    char root[1024], point[1024], fstype[64], super[1024] = "";
    char *dash = strstr(line, " - ");
    if (!dash || sscanf(line, "%*s %*s %*s %1023s %1023s", root, point) != 2 ||
        sscanf(dash + 3, "%63s %*s %1023s", fstype, super) < 1 || strcmp(root, "/") != 0)
      continue;
    if (v2)
      found = strcmp(fstype, "cgroup2") == 0;
    else
      found = strcmp(fstype, "cgroup") == 0 && strstr(super, "memory") != NULL;
    if (found)
      snprintf(mnt, cap, "%s", point);
  }
  fclose(f);
  return found;
}

/* This process's group in the hierarchy (v2: the "0::" line; v1: the one naming memory). */
static bool own_group(bool v2, char *path, size_t cap) {
  FILE *f = fopen("/proc/self/cgroup", "re");
  if (!f)
    return false;
  char line[4096];
  bool found = false;
  while (!found && fgets(line, sizeof line, f)) {
    char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c2)
      continue;
    *c2 = 0;
    const char *ctl = c1 + 1;
    found = v2 ? (line[0] == '0' && c1 == line + 1 && !*ctl) : strstr(ctl, "memory") != NULL;
    if (found) {
      c2[1 + strcspn(c2 + 1, "\n")] = 0;
      snprintf(path, cap, "%s", c2 + 1);
    }
  }
  fclose(f);
  return found;
}

static int write_file(const char *dir, const char *name, const char *file, const char *val) {
  char p[MPROC__MEMCG_PATH + 128];
  snprintf(p, sizeof p, "%s/%s/%s", dir, name, file);
  int fd;
  do
    fd = open(p, O_WRONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0)
    return -errno;
  int rc = mproc__write_full(fd, val, strlen(val));
  mproc__close(fd);
  return rc;
}

/* Whether dir/name can be made, capped and removed. */
static bool usable(int kind, const char *dir) {
  char name[64];
  snprintf(name, sizeof name, "mproc-probe-%d", (int)mproc__getpid());
  char p[MPROC__MEMCG_PATH + 64];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  if (mkdir(p, 0755) < 0 && errno != EEXIST)
    return false;
  bool ok = write_file(dir, name, kind == MPROC__MEMCG_V2 ? "memory.max" : "memory.limit_in_bytes",
                       "1073741824") == 0;
  rmdir(p);
  return ok;
}

int mproc__memcg_probe(char *dir, size_t cap) {
  char mnt[1024], grp[2048];
  for (int v = 2; v >= 1; v--) {
    bool v2 = v == 2;
    if (!find_mount(v2, mnt, sizeof mnt) || !own_group(v2, grp, sizeof grp))
      continue;
    int n = snprintf(dir, cap, "%s%s", mnt, strcmp(grp, "/") ? grp : "");
    if (n < 0 || (size_t)n >= cap || (size_t)n >= MPROC__MEMCG_PATH)
      continue;
    if (v2) { /* the memory controller must already be on for this group's children */
      char f[MPROC__MEMCG_PATH + 32], ctl[512] = "";
      snprintf(f, sizeof f, "%s/cgroup.subtree_control", dir);
      FILE *s = fopen(f, "re");
      bool on = s && fgets(ctl, sizeof ctl, s) && strstr(ctl, "memory");
      if (s)
        fclose(s);
      if (!on)
        continue;
    }
    int kind = v2 ? MPROC__MEMCG_V2 : MPROC__MEMCG_V1;
    if (usable(kind, dir))
      return kind;
  }
  return -EOPNOTSUPP;
}

int mproc__memcg_enter(int kind, const char *dir, const char *name, uint64_t limit) {
  char p[MPROC__MEMCG_PATH + 64], val[32];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  if (mkdir(p, 0755) < 0 && errno != EEXIST)
    return -errno;
  snprintf(val, sizeof val, "%llu", (unsigned long long)limit);
  int rc;
  if (kind == MPROC__MEMCG_V2) {
    rc = write_file(dir, name, "memory.max", val);
    /* Swap would let the child go past the cap unseen: none (absent without swap). */
    if (rc == 0)
      (void)write_file(dir, name, "memory.swap.max", "0");
  } else {
    rc = write_file(dir, name, "memory.limit_in_bytes", val);
    if (rc == 0) /* memory + swap at the same cap: no swapping past it (absent without swap) */
      (void)write_file(dir, name, "memory.memsw.limit_in_bytes", val);
  }
  /* "0": the writer itself. */
  if (rc == 0)
    rc = write_file(dir, name, "cgroup.procs", "0");
  if (rc < 0)
    rmdir(p);
  return rc;
}

int64_t mproc__memcg_oom_kills(int kind, const char *dir, const char *name) {
  char p[MPROC__MEMCG_PATH + 64], line[256];
  snprintf(p, sizeof p, "%s/%s/%s", dir, name,
           kind == MPROC__MEMCG_V2 ? "memory.events" : "memory.oom_control");
  FILE *f = fopen(p, "re");
  if (!f)
    return -errno;
  int64_t n = -ENOENT;
  while (fgets(line, sizeof line, f)) {
    long long v;
    if (sscanf(line, "oom_kill %lld", &v) == 1)
      n = v;
  }
  fclose(f);
  return n;
}

int mproc__memcg_remove(const char *dir, const char *name, bool wait) {
  char p[MPROC__MEMCG_PATH + 64];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  /* A group empties a moment after its last process is reaped: retry EBUSY briefly. */
  for (int i = 0; i < 100; i++) {
    if (rmdir(p) == 0 || errno == ENOENT)
      return 0;
    if (errno != EBUSY || !wait)
      return -errno;
    mproc__yield();
  }
  return -EBUSY;
}

void mproc__memcg_sweep(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  if (!d)
    return;
  size_t n = strlen(prefix);
  struct dirent *e;
  while ((e = readdir(d)))
    if (strncmp(e->d_name, prefix, n) == 0)
      (void)mproc__memcg_remove(dir, e->d_name, false);
  closedir(d);
}
