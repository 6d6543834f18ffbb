"""What each route of the query API answers, for OpenAPI and for the answer itself.

Loose on purpose: a stored definition is shown as stored (older ones may lack newer fields,
and ``extra="allow"`` passes fields these models do not name), and routes are declared with
``response_model_exclude_unset`` so that a key a route leaves out stays out.
"""
