"""The README's demo: real local components, one `discover --once` against them."""
