"""GB/T 26875.3-2011 code tables, as data: commands, data unit types, system types, component
types, analog value types and the meaning of the status and operation bits.

Names are snake_case English (they travel in event data as ``system_type`` and
``component_type``); ``*_ZH`` keep the standard's Chinese names for screens and docs. A code
that is reserved or user-defined in the standard has no name here: the mapping then sends
``type_<code>``.
"""

from __future__ import annotations

from typing import Final

# ---- commands (命令字节) ----------------------------------------------------------------------
CMD_CONTROL: Final = 1  # 控制命令 (time sync)
CMD_SEND: Final = 2  # 发送数据
CMD_CONFIRM: Final = 3  # 确认
CMD_REQUEST: Final = 4  # 请求
CMD_REPLY: Final = 5  # 应答
CMD_DENY: Final = 6  # 否认
COMMANDS: Final = {1: "control", 2: "send", 3: "confirm", 4: "request", 5: "reply", 6: "deny"}

# ---- data unit types (类型标志) -------------------------------------------------------------
UNIT_TYPES: Final = {
    1: "system_status",  # 上传建筑消防设施系统状态
    2: "component_status",  # 上传建筑消防设施部件运行状态
    3: "component_analog",  # 上传建筑消防设施部件模拟量值
    4: "system_operation",  # 上传建筑消防设施操作信息
    5: "system_version",  # 上传建筑消防设施软件版本
    6: "system_config",  # 上传建筑消防设施系统配置情况
    7: "component_config",  # 上传建筑消防设施部件配置情况
    8: "system_time",  # 上传建筑消防设施系统时间
    21: "uitd_status",  # 上传用户信息传输装置运行状态
    24: "uitd_operation",  # 上传用户信息传输装置操作信息
    25: "uitd_version",  # 上传用户信息传输装置软件版本
    26: "uitd_config",  # 上传用户信息传输装置配置情况
    28: "uitd_time",  # 上传用户信息传输装置系统时间
    90: "sync_uitd_clock",  # 同步用户信息传输装置时钟 (downlink, command 1)
}
UNIT_SYNC_CLOCK: Final = 90

# ---- system types (系统类型标志) ------------------------------------------------------------
SYSTEM_TYPES: Final = {
    0: "general",
    1: "fire_alarm",
    10: "linkage_controller",
    11: "hydrant",
    12: "sprinkler",
    13: "gas_extinguishing",
    14: "water_spray_pump",
    15: "water_spray_pressure",
    16: "foam",
    17: "dry_powder",
    18: "smoke_control",
    19: "fire_doors_shutters",
    20: "fire_elevator",
    21: "emergency_broadcast",
    22: "emergency_lighting",
    23: "fire_power",
    24: "fire_phone",
}
SYSTEM_TYPES_ZH: Final = {
    0: "通用",
    1: "火灾报警系统",
    10: "消防联动控制器",
    11: "消火栓系统",
    12: "自动喷水灭火系统",
    13: "气体灭火系统",
    14: "水喷雾灭火系统(泵启动方式)",
    15: "水喷雾灭火系统(压力容器启动方式)",
    16: "泡沫灭火系统",
    17: "干粉灭火系统",
    18: "防烟排烟系统",
    19: "防火门及卷帘系统",
    20: "消防电梯",
    21: "消防应急广播",
    22: "消防应急照明和疏散指示系统",
    23: "消防电源",
    24: "消防电话",
}

# ---- component types (部件类型) -------------------------------------------------------------
COMPONENT_TYPES: Final = {
    0: "general",
    1: "fire_alarm_controller",
    10: "combustible_gas_detector",
    11: "point_gas_detector",
    12: "standalone_gas_detector",
    13: "line_gas_detector",
    16: "electrical_fire_monitor",
    17: "residual_current_detector",
    18: "temperature_electrical_detector",
    21: "detection_loop",
    22: "fire_display_panel",
    23: "manual_call_point",
    24: "hydrant_button",
    25: "fire_detector",
    30: "heat_detector",
    31: "point_heat_detector",
    32: "point_heat_detector_s",
    33: "point_heat_detector_r",
    34: "line_heat_detector",
    35: "line_heat_detector_s",
    36: "line_heat_detector_r",
    37: "fibre_heat_detector",
    40: "smoke_detector",
    41: "ionisation_smoke_detector",
    42: "photoelectric_smoke_detector",
    43: "beam_smoke_detector",
    44: "aspirating_smoke_detector",
    50: "multi_sensor_detector",
    51: "smoke_heat_detector",
    52: "flame_heat_detector",
    53: "flame_smoke_detector",
    61: "uv_flame_detector",
    62: "ir_flame_detector",
    69: "flame_detector",
    74: "gas_detector",
    78: "video_fire_detector",
    79: "acoustic_fire_detector",
    81: "gas_extinguishing_controller",
    82: "fire_electrical_control",
    83: "graphic_display",
    84: "module",
    85: "input_module",
    86: "output_module",
    87: "input_output_module",
    88: "relay_module",
    91: "fire_pump",
    92: "water_tank",
    95: "sprinkler_pump",
    96: "water_flow_indicator",
    97: "signal_valve",
    98: "alarm_valve",
    99: "pressure_switch",
    101: "valve_actuator",
    102: "fire_door",
    103: "fire_damper",
    104: "ventilation_ac",
    105: "foam_pump",
    106: "solenoid_valve",
    111: "smoke_exhaust_fan",
    113: "smoke_exhaust_damper",
    114: "normally_closed_air_inlet",
    115: "smoke_vent",
    116: "smoke_curtain",
    117: "fire_shutter_controller",
    118: "fire_door_monitor",
    121: "alarm_sounder",
}
COMPONENT_TYPES_ZH: Final = {
    0: "通用",
    1: "火灾报警控制器",
    10: "可燃气体探测器",
    11: "点型可燃气体探测器",
    12: "独立式可燃气体探测器",
    13: "线型可燃气体探测器",
    16: "电气火灾监控报警器",
    17: "剩余电流式电气火灾监控探测器",
    18: "测温式电气火灾监控探测器",
    21: "探测回路",
    22: "火灾显示盘",
    23: "手动火灾报警按钮",
    24: "消火栓按钮",
    25: "火灾探测器",
    30: "感温火灾探测器",
    31: "点型感温火灾探测器",
    32: "点型感温火灾探测器(S型)",
    33: "点型感温火灾探测器(R型)",
    34: "线型感温火灾探测器",
    35: "线型感温火灾探测器(S型)",
    36: "线型感温火灾探测器(R型)",
    37: "光纤感温火灾探测器",
    40: "感烟火灾探测器",
    41: "点型离子感烟火灾探测器",
    42: "点型光电感烟火灾探测器",
    43: "线型光束感烟火灾探测器",
    44: "吸气式感烟火灾探测器",
    50: "复合式火灾探测器",
    51: "复合式感烟感温火灾探测器",
    52: "复合式感光感温火灾探测器",
    53: "复合式感光感烟火灾探测器",
    61: "紫外火焰探测器",
    62: "红外火焰探测器",
    69: "感光火灾探测器",
    74: "气体探测器",
    78: "图像摄像方式火灾探测器",
    79: "感声火灾探测器",
    81: "气体灭火控制器",
    82: "消防电气控制装置",
    83: "消防控制室图形显示装置",
    84: "模块",
    85: "输入模块",
    86: "输出模块",
    87: "输入/输出模块",
    88: "中继模块",
    91: "消防水泵",
    92: "消防水箱",
    95: "喷淋泵",
    96: "水流指示器",
    97: "信号阀",
    98: "报警阀",
    99: "压力开关",
    101: "阀驱动装置",
    102: "防火门",
    103: "防火阀",
    104: "通风空调",
    105: "泡沫液泵",
    106: "管网电磁阀",
    111: "防烟排烟风机",
    113: "排烟防火阀",
    114: "常闭送风口",
    115: "排烟口",
    116: "电控挡烟垂壁",
    117: "防火卷帘控制器",
    118: "防火门监控器",
    121: "警报装置",
}

# ---- analog value types (模拟量类型): (name, unit, resolution) ------------------------------
ANALOG_TYPES: Final = {
    1: ("event_count", "件", 1.0),
    2: ("height", "m", 0.01),
    3: ("temperature", "°C", 0.1),
    4: ("pressure_mpa", "MPa", 0.1),
    5: ("pressure_kpa", "kPa", 0.1),
    6: ("gas_concentration", "%LEL", 0.1),
    7: ("time", "s", 1.0),
    8: ("voltage", "V", 0.1),
    9: ("current", "A", 0.1),
    10: ("flow", "L/s", 0.1),
    11: ("air_volume", "m³/min", 0.1),
    12: ("wind_speed", "m/s", 1.0),
}

# ---- status and operation bits ----------------------------------------------------------------
# Bit 0 of every status word: 1 = normal operation, 0 = test. The other bits: event names
# (ALERTS.md's fire_panel events), or None where the bit carries no event.
SYSTEM_STATUS_BITS: Final = {
    1: "fire",  # 火警
    2: "fault",  # 故障
    3: "disabled",  # 屏蔽
    4: "supervisory",  # 监管
    5: "start",  # 启动
    6: "feedback",  # 反馈
    7: "delay",  # 延时状态
    8: "power_fault:main",  # 主电故障
    9: "power_fault:backup",  # 备电故障
    10: "power_fault:bus",  # 总线故障
    11: "manual",  # 手动状态 (1 manual, 0 automatic)
    12: "config_changed",  # 配置改变
    13: "reset",  # 复位
}
COMPONENT_STATUS_BITS: Final = {
    1: "fire",
    2: "fault",
    3: "disabled",
    4: "supervisory",
    5: "start",
    6: "feedback",
    7: "delay",
    8: "power_fault:component",  # 电源故障
}
UITD_STATUS_BITS: Final = {
    1: "fire",  # 火警
    2: "fault",  # 故障
    3: "power_fault:main",  # 主电故障
    4: "power_fault:backup",  # 备电故障
    5: "link_fault",  # 与监控中心通信信道故障
    6: "wiring_fault",  # 检测连接线路故障
}
SYSTEM_OPERATION_BITS: Final = {
    0: "reset",  # 复位
    1: "silence",  # 消音
    2: "manual_alarm",  # 手动报警
    3: "alarm_cleared",  # 警情消除
    4: "self_test",  # 自检
    5: "acknowledge",  # 确认
    6: "test",  # 测试
}
UITD_OPERATION_BITS: Final = {
    0: "reset",
    1: "silence",
    2: "manual_alarm",
    3: "alarm_cleared",
    4: "self_test",
    5: "inspection_reply",  # 查岗应答
    6: "test",
}
# The status bits that are "trouble": when none of them is set any more, the component is
# back to normal (the mapping then sends ``normal``, or ``enabled`` after ``disabled``).
TROUBLE_EVENTS: Final = frozenset({"fire", "fault", "supervisory", "power_fault"})


def system_type_name(code: int) -> str:
    return SYSTEM_TYPES.get(code, f"type_{code}")


def component_type_name(code: int) -> str:
    return COMPONENT_TYPES.get(code, f"type_{code}")
