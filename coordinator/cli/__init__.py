"""`coordinator`: the operator CLI (kubectl's habits) and `coordinator serve`."""
