/* ktmfs.h is a C header: this file must compile as strict C99. */
#include "ktmfs.h"

int ktmfs_header_c_check(int fd) {
  char id[KTMFS_ID_SIZE];
  struct ktmfs_list_args list;
  memset(&list, 0, sizeof list);
  list.capacity = KTMFS_LIST_MAX;
  if (ktmfs_current(fd, id) == 0) return ktmfs_commit(fd, id);
  return ktmfs_list_transactions(fd, &list);
}
