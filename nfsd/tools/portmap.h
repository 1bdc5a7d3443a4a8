// SPDX-License-Identifier: BSD-2-Clause
// portmap.h -- registering with the local rpcbind (portmapper v2 SET/UNSET
// over TCP to 127.0.0.1:111).  Thread context; blocks briefly.
#pragma once

#include <cstdint>
#include <string>

namespace kc::nfs {

// Registers NFS v3 and MOUNT v3 on TCP.  Returns false with *err set.
bool portmap_register(uint16_t nfs_port, uint16_t mount_port, std::string *err);
// Removes the registrations (errors ignored).
void portmap_unregister(uint16_t nfs_port, uint16_t mount_port);

}  // namespace kc::nfs
