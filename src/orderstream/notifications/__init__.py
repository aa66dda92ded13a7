"""Customer notifications: SMS and e-mail at each step of an order, once, and the live tracking page."""
