#!/usr/bin/env python3
"""moto's server in a process of its own, for benchmarks: one request at a time, and
transactions that cost what they touch.

    .venv/bin/python bench/moto_server.py PORT

* One thread (werkzeug's ``threaded=False``): moto's conditional writes are not atomic
  across threads, real DynamoDB's are; served one at a time they are.
* moto's ``TransactWriteItems`` deep-copies every table it touches before each call
  so that it can roll back a cancelled one: O(table size), 0.3 s a call at 1,000
  items on this VM, where DynamoDB's cost does not grow with the table. Here only the
  items the call touches are copied and put back on a cancel: the same all-or-nothing
  outcome, at the cost of the call's own items.
* moto's EventBridge delivers each event to a rule's target through its default
  input paths, parsing those eight JSONPath expressions again for every event
  (jsonpath_ng builds its parser tables each time: ~14 ms an event on this VM, where
  PutEvents' own cost does not depend on the rule's paths). Here each expression is
  parsed once and kept: the same expression objects, the same delivered events.
"""
from __future__ import annotations

import copy
import functools
import sys
from typing import Any

import jsonpath_ng.ext
import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.moto_server.threaded_moto_server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

_transact = DynamoDBBackend.transact_write_items


class _TablesNotCopied:
    """Stands in for ``copy`` inside moto's transaction: its table "backup" is the table."""

    @staticmethod
    def deepcopy(value: Any) -> Any:
        return value


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    touched = []
    for entry in transact_items:
        op = next(iter(entry.values()))
        table = self.get_table(op["TableName"])
        key = op.get("Key") or {
            a: op["Item"][a] for a in (table.hash_key_attr, table.range_key_attr) if a is not None
        }
        touched.append((op["TableName"], key, copy.deepcopy(self.get_item(op["TableName"], key))))
    dynamodb_models.copy = _TablesNotCopied  # type: ignore[assignment]
    try:
        return _transact(self, transact_items)
    except Exception:
        for name, key, before in reversed(touched):
            if before is None:
                if self.get_item(name, key) is not None:
                    self.delete_item(name, key)
            else:
                self.put_item(name, before.to_json()["Attributes"])
        raise
    finally:
        dynamodb_models.copy = copy  # type: ignore[assignment]


DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
# moto imports ``parse`` from this module inside the call, so the cached one is found
jsonpath_ng.ext.parse = functools.lru_cache(maxsize=None)(jsonpath_ng.ext.parse)

if __name__ == "__main__":
    run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)
