"""The tree operations: what put, get, find, update, remove and transactions do on the tree.

`db` (`Database`: a node's metadata read and written, transactions, the lock around writes),
`open` (opening or creating a database), `resolve` (the one walk from a location to a node),
`plan`/`put`, `remove`, `read`, and `transaction` (staged state). They see the store only
through `metatree._storage.Storage`, never a backend.
"""
