// What the agent tells the server about its host: facts (rarely change) and metrics.
#pragma once

#include <map>
#include <string>

#include "muster/v1/agent.pb.h"

namespace muster::agent {

std::map<std::string, std::string> collectFacts(const std::string& agent_version);
// `disk_path`: the filesystem whose space is reported (the state dir's).
muster::v1::Metrics collectMetrics(const std::string& disk_path);
// /etc/machine-id (or /var/lib/dbus/machine-id), trimmed; empty if none.
std::string machineId();

}  // namespace muster::agent
