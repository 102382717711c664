"""Classical data-assimilation methods, registered as plugins like any third party's."""
