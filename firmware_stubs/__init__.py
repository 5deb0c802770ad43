"""Reference device-side code for hardware makers (the device half of PROTOCOL.md section 1).

Runs on MicroPython and on CPython. Copy ``anju_node.py`` and the node you need
(``elevator_terminal.py``, ``smoke_node.py``, ``pressure_node.py``) to the device, write the
small hardware layer for your board, and pass an ``umqtt.simple.MQTTClient``. See README.md.
This package imports nothing by itself, so that a device loads only the modules it uses.
"""
