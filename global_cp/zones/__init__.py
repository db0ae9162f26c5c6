"""Everything the global CP does with zones: enrollment, identity, sync, inventory."""
