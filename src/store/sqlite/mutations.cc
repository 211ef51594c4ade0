// The SQL of each store mutation.
#include "store/sqlite/mutations.h"

#include <algorithm>
#include <functional>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "store/sqlite/rows.h"

namespace muster::store::sqlite {
namespace {

// Every host column but the key, as "col = excluded.col".
std::string hostUpsertAssignments() {
  std::string out;
  for (absl::string_view col : absl::StrSplit(kHostColumns, ", ")) {
    if (col == "id") continue;
    absl::StrAppend(&out, out.empty() ? "" : ", ", col, " = excluded.", col);
  }
  return out;
}

absl::StatusOr<int64_t> runStatement(Connection& conn, const std::string& sql,
                                     const std::function<void(Stmt&)>& bind,
                                     const std::string& context) {
  auto stmt = conn.prepare(sql);
  if (!stmt.ok()) return annotate(stmt.status(), context);
  bind(*stmt);
  if (auto st = stmt->run(); !st.ok()) return annotate(st, context);
  return conn.changes();
}

bool isForeignKeyError(const absl::Status& st) {
  return absl::IsInvalidArgument(st) &&
         st.message().find("FOREIGN KEY constraint failed") != absl::string_view::npos;
}

class Applier {
 public:
  explicit Applier(Connection& conn) : conn_(conn) {}

  absl::StatusOr<int64_t> operator()(const UpsertHost& m) {
    // Statement texts are never destroyed: the writer thread may still run one while static
    // destructors run at exit (a store left open, as fuzz targets leave theirs).
    static const std::string& sql = *new std::string(absl::StrCat(
        "INSERT INTO hosts (", kHostColumns, ") VALUES (", placeholders(kHostColumnCount),
        ") ON CONFLICT (id) DO UPDATE SET ", hostUpsertAssignments()));
    return runStatement(
        conn_, sql, [&](Stmt& s) { bindHost(s, m.host); },
        absl::StrCat("storing host ", m.host.id));
  }

  absl::StatusOr<int64_t> operator()(const SetHostStatus& m) {
    return runStatement(
        conn_, "UPDATE hosts SET status = ?2, status_changed_at_ms = ?3 WHERE id = ?1",
        [&](Stmt& s) {
          s.bindText(1, m.host_id).bindText(2, model::toString(m.status)).bindInt(3, m.at_ms);
        },
        absl::StrCat("setting status of host ", m.host_id));
  }

  absl::StatusOr<int64_t> operator()(const RecordHeartbeats& m) {
    int64_t total = 0;
    for (const RecordHeartbeat& beat : m.beats) {
      auto rows = (*this)(beat);
      if (!rows.ok()) return rows.status();
      total += *rows;
    }
    return total;
  }

  absl::StatusOr<int64_t> operator()(const RecordHeartbeat& m) {
    return runStatement(
        conn_,
        "UPDATE hosts SET load1 = ?2, load5 = ?3, load15 = ?4, mem_total_bytes = ?5, "
        "mem_available_bytes = ?6, disk_total_bytes = ?7, disk_free_bytes = ?8, "
        "uptime_seconds = ?9, last_seen_ms = ?10 WHERE id = ?1",
        [&](Stmt& s) {
          const model::Metrics& x = m.metrics;
          s.bindText(1, m.host_id)
              .bindDouble(2, x.load1)
              .bindDouble(3, x.load5)
              .bindDouble(4, x.load15)
              .bindInt(5, static_cast<int64_t>(x.mem_total_bytes))
              .bindInt(6, static_cast<int64_t>(x.mem_available_bytes))
              .bindInt(7, static_cast<int64_t>(x.disk_total_bytes))
              .bindInt(8, static_cast<int64_t>(x.disk_free_bytes))
              .bindInt(9, static_cast<int64_t>(x.uptime_seconds))
              .bindInt(10, m.last_seen_ms);
        },
        absl::StrCat("recording heartbeat of host ", m.host_id));
  }

  absl::StatusOr<int64_t> operator()(const InsertRun& m) {
    static const std::string& run_sql = *new std::string(
        absl::StrCat("INSERT INTO runs (", kRunColumns, ", host_count) VALUES (",
                     placeholders(kRunColumnCount), ", ?", kRunColumnCount + 1, ")"));
    const Run& run = m.run;
    // A run stored in slices lists every target until the last slice commits.
    const int64_t host_count =
        static_cast<int64_t>(std::max(m.commands.size(), run.pending_targets.size()));
    for (const model::Command& c : m.commands) {
      if (c.run_id != run.id) {
        return absl::InvalidArgumentError(absl::StrCat("storing run ", run.id, ": command ", c.id,
                                                       " names run '", c.run_id, "'"));
      }
    }
    auto rows = runStatement(
        conn_, run_sql,
        [&](Stmt& s) {
          bindRun(s, run);
          s.bindInt(kRunColumnCount + 1, host_count);
        },
        absl::StrCat("storing run ", run.id));
    if (absl::IsAlreadyExists(rows.status())) {
      if (rows.status().message().find("idempotency_key") != absl::string_view::npos) {
        return absl::AlreadyExistsError(absl::StrCat("idempotency key '", run.idempotency_key,
                                                     "' is already used by another run; run ",
                                                     run.id, " was not stored"));
      }
      return absl::AlreadyExistsError(absl::StrCat("run ", run.id, " already exists"));
    }
    if (!rows.ok()) return rows.status();
    auto commands = insertCommands(run.id, m.commands, host_count >= kLargeRunHosts);
    if (!commands.ok()) return commands.status();
    return *rows + *commands;
  }

  absl::StatusOr<int64_t> operator()(const InsertCommands& m) {
    for (const model::Command& c : m.commands) {
      if (c.run_id != m.run_id) {
        return absl::InvalidArgumentError(absl::StrCat("storing commands of run ", m.run_id,
                                                       ": command ", c.id, " names run '", c.run_id,
                                                       "'"));
      }
    }
    auto stmt = conn_.prepare("SELECT host_count FROM runs WHERE id = ?1");
    if (!stmt.ok()) return annotate(stmt.status(), absl::StrCat("storing run ", m.run_id));
    stmt->bindText(1, m.run_id);
    auto found = stmt->step();
    if (!found.ok()) return annotate(found.status(), absl::StrCat("storing run ", m.run_id));
    if (!*found) return absl::NotFoundError(absl::StrCat("no run with id '", m.run_id, "'"));
    const bool large = stmt->columnInt(0) >= kLargeRunHosts;
    stmt->reset();
    auto total = insertCommands(m.run_id, m.commands, large);
    if (!total.ok()) return total.status();
    if (!m.completes_run) return total;
    auto done = runStatement(
        conn_, "UPDATE runs SET pending_targets = '[]' WHERE id = ?1",
        [&](Stmt& s) { s.bindText(1, m.run_id); }, absl::StrCat("completing run ", m.run_id));
    if (!done.ok()) return done.status();
    if (*done == 0) return absl::NotFoundError(absl::StrCat("no run with id '", m.run_id, "'"));
    return *total;
  }

  absl::StatusOr<int64_t> operator()(const UpdateCommands& m) {
    int64_t rows = 0;
    for (const auto& update : m.updates) {
      auto r = (*this)(update);
      if (!r.ok()) return r.status();
      rows += *r;
    }
    return rows;
  }

  // Writes the fields UpdateCommand::of copies (store.cc); keep the two in step.
  absl::StatusOr<int64_t> operator()(const UpdateCommand& m) {
    const model::Command& c = m.command;
    std::string sql =
        "UPDATE commands SET state = ?2, dispatched_at_ms = ?3, started_at_ms = ?4, "
        "finished_at_ms = ?5, exit_code = ?6, signal = ?7, error = ?8, output_truncated = ?9, "
        "stdout_bytes = ?10, stderr_bytes = ?11, cancel_requested = ?12, result_source = ?13 "
        "WHERE id = ?1";
    constexpr int kFirstStateParam = 14;
    if (!m.only_if_state_in.empty()) {
      sql += " AND state IN (";
      for (size_t i = 0; i < m.only_if_state_in.size(); ++i) {
        absl::StrAppend(&sql, i > 0 ? ", ?" : "?", kFirstStateParam + i);
      }
      sql += ")";
    }
    return runStatement(
        conn_, sql,
        [&](Stmt& s) {
          s.bindText(1, c.id)
              .bindText(2, model::toString(c.state))
              .bindInt(3, c.dispatched_at_ms)
              .bindInt(4, c.started_at_ms)
              .bindInt(5, c.finished_at_ms);
          if (c.exit_code.has_value()) {
            s.bindInt(6, *c.exit_code);
          } else {
            s.bindNull(6);
          }
          s.bindInt(7, c.signal)
              .bindText(8, c.error)
              .bindInt(9, c.output_truncated ? 1 : 0)
              .bindInt(10, static_cast<int64_t>(c.stdout_bytes))
              .bindInt(11, static_cast<int64_t>(c.stderr_bytes))
              .bindInt(12, c.cancel_requested ? 1 : 0)
              .bindText(13, resultSourceName(c.result_source));
          for (size_t i = 0; i < m.only_if_state_in.size(); ++i) {
            s.bindText(kFirstStateParam + static_cast<int>(i),
                       model::toString(m.only_if_state_in[i]));
          }
        },
        absl::StrCat("updating command ", c.id));
  }

  absl::StatusOr<int64_t> operator()(const MarkDispatched& m) {
    auto stmt = conn_.prepare(
        "UPDATE commands SET state = 'dispatched', dispatched_at_ms = ?2 "
        "WHERE id = ?1 AND state = 'queued'");
    if (!stmt.ok()) return annotate(stmt.status(), "marking commands dispatched");
    int64_t total = 0;
    for (const std::string& id : m.command_ids) {
      stmt->bindText(1, id).bindInt(2, m.at_ms);
      if (auto st = stmt->run(); !st.ok()) {
        return annotate(st, absl::StrCat("marking command ", id, " dispatched"));
      }
      total += conn_.changes();
      stmt->reset();
    }
    return total;
  }

  absl::StatusOr<int64_t> operator()(const AppendOutput& m) {
    const model::OutputChunk& ch = m.chunk;
    auto rows = runStatement(
        conn_,
        // Bytes at an offset never change, so a chunk already there is kept, unless the new
        // one is longer: an agent that lost its link replays its output merged into fewer,
        // larger chunks, and the tail of such a chunk must not be dropped.
        "INSERT INTO command_output (command_id, stream, offset, data) VALUES (?1, ?2, ?3, ?4) "
        "ON CONFLICT (command_id, stream, offset) DO UPDATE SET data = excluded.data "
        "WHERE length(excluded.data) > length(command_output.data)",
        [&](Stmt& s) {
          s.bindText(1, ch.command_id)
              .bindText(2, model::toString(ch.stream))
              .bindInt(3, static_cast<int64_t>(ch.offset))
              .bindBlob(4, ch.data);
        },
        absl::StrCat("storing ", std::string(model::toString(ch.stream)), " of command ",
                     ch.command_id, " at offset ", ch.offset));
    if (isForeignKeyError(rows.status())) {
      return absl::NotFoundError(
          absl::StrCat("output for unknown command ", ch.command_id, " was not stored"));
    }
    return rows;
  }

  absl::StatusOr<int64_t> operator()(const InsertEnrollToken& m) {
    static const std::string& sql =
        *new std::string(absl::StrCat("INSERT INTO enroll_tokens (", kEnrollTokenColumns,
                                      ") VALUES (", placeholders(kEnrollTokenColumnCount), ")"));
    auto rows = runStatement(
        conn_, sql, [&](Stmt& s) { bindEnrollToken(s, m.token); },
        absl::StrCat("storing enrollment token ", m.token.id));
    if (absl::IsAlreadyExists(rows.status())) {
      return absl::AlreadyExistsError(absl::StrCat(
          "enrollment token ", m.token.id, " (or one with the same secret) already exists"));
    }
    return rows;
  }

  absl::StatusOr<int64_t> operator()(const ConsumeEnrollToken& m) {
    // -1 (unlimited) is rewritten to itself, which still counts as one changed row.
    return runStatement(
        conn_,
        "UPDATE enroll_tokens SET uses_left = CASE WHEN uses_left > 0 THEN uses_left - 1 "
        "ELSE uses_left END WHERE id = ?1 AND (uses_left > 0 OR uses_left = -1) AND revoked = 0",
        [&](Stmt& s) { s.bindText(1, m.token_id); },
        absl::StrCat("consuming enrollment token ", m.token_id));
  }

  absl::StatusOr<int64_t> operator()(const RevokeEnrollToken& m) {
    return runStatement(
        conn_, "UPDATE enroll_tokens SET revoked = 1 WHERE id = ?1",
        [&](Stmt& s) { s.bindText(1, m.token_id); },
        absl::StrCat("revoking enrollment token ", m.token_id));
  }

  absl::StatusOr<int64_t> operator()(const InsertApiToken& m) {
    static const std::string& sql =
        *new std::string(absl::StrCat("INSERT INTO api_tokens (", kApiTokenColumns, ") VALUES (",
                                      placeholders(kApiTokenColumnCount), ")"));
    return runStatement(
        conn_, sql, [&](Stmt& s) { bindApiToken(s, m.token); },
        absl::StrCat("storing API token ", m.token.id));
  }

  absl::StatusOr<int64_t> operator()(const InsertEvent& m) {
    static const std::string& sql = *new std::string(absl::StrCat(
        "INSERT INTO events (", kEventColumns, ") VALUES (", placeholders(kEventColumnCount), ")"));
    return runStatement(
        conn_, sql, [&](Stmt& s) { bindEvent(s, m.event); },
        absl::StrCat("storing audit event ", m.event.id, " (", m.event.kind, ")"));
  }

  absl::StatusOr<int64_t> operator()(const DeleteEventsBefore& m) {
    // Oldest first by the at_ms index; LIMIT bounds the transaction.
    return runStatement(
        conn_,
        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at_ms < ?1 "
        "ORDER BY at_ms LIMIT ?2)",
        [&](Stmt& s) { s.bindInt(1, m.before_ms).bindInt(2, m.max_rows); },
        "sweeping old audit events");
  }

  absl::StatusOr<int64_t> operator()(const Barrier&) { return 0; }
  absl::StatusOr<int64_t> operator()(const RevokeApiToken& m) {
    return runStatement(
        conn_, "UPDATE api_tokens SET revoked = 1 WHERE id = ?1",
        [&](Stmt& s) { s.bindText(1, m.token_id); },
        absl::StrCat("revoking API token ", m.token_id));
  }

  // Inserts commands of one run (`large`: of a run for kLargeRunHosts hosts or more); returns
  // rows inserted.
  absl::StatusOr<int64_t> insertCommands(const std::string& run_id,
                                         const std::vector<model::Command>& commands, bool large) {
    static const std::string& command_sql = *new std::string(
        absl::StrCat("INSERT INTO commands (", kCommandColumns, ", large_run) VALUES (",
                     placeholders(kCommandColumnCount), ", ?", kCommandColumnCount + 1, ")"));
    auto stmt = conn_.prepare(command_sql);
    if (!stmt.ok()) return annotate(stmt.status(), absl::StrCat("storing run ", run_id));
    // Every command of a run shares its exec spec: encode it once, not once per row.
    CommandRowCache cache;
    int64_t total = 0;
    for (const model::Command& c : commands) {
      bindCommand(*stmt, c, &cache);
      stmt->bindInt(kCommandColumnCount + 1, large ? 1 : 0);
      if (auto st = stmt->run(); !st.ok()) {
        if (absl::IsAlreadyExists(st)) {
          return absl::AlreadyExistsError(
              absl::StrCat("command ", c.id, " already exists; run ", run_id, " was not stored"));
        }
        return annotate(st, absl::StrCat("storing command ", c.id, " of run ", run_id));
      }
      total += conn_.changes();
      stmt->reset();
    }
    return total;
  }

 private:
  Connection& conn_;
};

}  // namespace

absl::StatusOr<int64_t> applyMutation(Connection& conn, const Mutation& mutation) {
  return std::visit(Applier(conn), mutation);
}

bool isSingleStatement(const Mutation& mutation) {
  return !std::holds_alternative<InsertRun>(mutation) &&
         !std::holds_alternative<InsertCommands>(mutation) &&
         !std::holds_alternative<RecordHeartbeats>(mutation) &&
         !std::holds_alternative<UpdateCommands>(mutation);
}

}  // namespace muster::store::sqlite
